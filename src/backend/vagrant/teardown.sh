#!/bin/sh
# Removes a vagrant machine of envbuild and everything it made in libvirt (docs/backends.md,
# "vagrant"): `vagrant destroy -f`, then libvirt's own view in case Vagrant was killed half-way
# (the domain with its snapshots, every volume of the machine's pool, the transient pool), the
# pool folder, the seed, and Vagrant's index entry. Safe to run again.
# $1 uri, $2 domain, $3 pool, $4 pool folder, $5 Vagrant project folder, $6 seed.
uri=$1 domain=$2 pool=$3 dir=$4 project=$5 seed=$6
if [ -d "$project/.vagrant" ]; then
  VAGRANT_CWD=$project timeout 180 vagrant destroy -f >/dev/null 2>&1 || true
fi
virsh -q -c "$uri" destroy "$domain" >/dev/null 2>&1 || true
virsh -q -c "$uri" undefine "$domain" --snapshots-metadata --nvram >/dev/null 2>&1 ||
  virsh -q -c "$uri" undefine "$domain" --snapshots-metadata >/dev/null 2>&1 || true
for volume in $(virsh -q -c "$uri" vol-list "$pool" 2>/dev/null | awk '{print $1}'); do
  virsh -q -c "$uri" vol-delete "$volume" --pool "$pool" >/dev/null 2>&1 || true
done
virsh -q -c "$uri" pool-destroy "$pool" >/dev/null 2>&1 || true
rm -rf "$dir" "$project/.vagrant" "$seed"
rm -f "${dir%/*}/machine.json" "${dir%/*}/running.json"
timeout 120 vagrant global-status --prune >/dev/null 2>&1 || true
