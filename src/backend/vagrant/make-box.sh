#!/bin/sh
# Packages a vagrant-libvirt box from an envbuild debootstrap base image (docs/backends.md,
# "vagrant"). $1: the base's disk.qcow2 (a bare ext4 file system), $2: a new, empty folder that
# receives box.img, metadata.json, Vagrantfile and envbuild.box. Runs as root (loop mount).
# Part of the box recipe: changing this file makes new boxes and rebuilds every vagrant stage.
set -eu
base=$1 out=$2
offset=1048576
work=$out/work
mkdir -p "$work/mnt"
mnt=$work/mnt
cleanup() {
  mountpoint -q "$mnt" && umount "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT

# An MBR disk: one bootable partition at 1 MiB holding the base's file system, bit for bit.
qemu-img convert -O raw "$base" "$work/fs.raw"
size=$(stat -c %s "$work/fs.raw")
truncate -s $((size + offset)) "$work/disk.raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$work/disk.raw"
dd if="$work/fs.raw" of="$work/disk.raw" bs=1M seek=1 conv=sparse,notrunc status=none
rm "$work/fs.raw"

# `losetup -P` gives no partition devices here: mount the partition by its offset.
mount -o loop,offset=$offset "$work/disk.raw" "$mnt"
kernel=$(cd "$mnt/boot" && ls vmlinuz-* | sort -V | tail -n 1)
initrd=initrd.img-${kernel#vmlinuz-}
printf '/dev/vda1 / ext4 rw,errors=remount-ro 0 1\n' > "$mnt/etc/fstab"
mkdir -p "$mnt/boot/extlinux"
cat > "$mnt/boot/extlinux/extlinux.conf" <<CONF
DEFAULT envbuild
PROMPT 0
TIMEOUT 0
LABEL envbuild
  LINUX /boot/$kernel
  INITRD /boot/$initrd
  APPEND root=/dev/vda1 rw console=ttyS0 net.ifnames=0 quiet
CONF
# No vagrant user and no insecure key: Vagrant logs in as root with the environment's own key,
# which the seed disk brings at every boot (configure-base.sh), as envbuild does.
extlinux --install "$mnt/boot/extlinux" >/dev/null 2>&1
umount "$mnt"
dd if=/usr/lib/EXTLINUX/mbr.bin of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none

qemu-img convert -O qcow2 "$work/disk.raw" "$out/box.img"
gib=$(( (size + offset + 1073741823) / 1073741824 ))
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' "$gib" > "$out/metadata.json"
cat > "$out/Vagrantfile" <<'VF'
# An envbuild box: envbuild's Vagrantfile sets everything (network, seed disk, keys).
Vagrant.configure("2") do |config|
end
VF
tar -C "$out" -cf "$out/envbuild.box" metadata.json Vagrantfile box.img
