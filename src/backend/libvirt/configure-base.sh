#!/bin/sh
# Turns a debootstrap tree ($1) into an envbuild guest (docs/backends.md, "Base images").
# Part of the base image's recipe digest: changing this file rebuilds the base and every stage.
set -eu
R=$1

echo envbuild > "$R/etc/hostname"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$R/etc/fstab"
# QEMU user networking's resolver.
printf 'nameserver 10.0.2.3\n' > "$R/etc/resolv.conf"
# A fresh machine-id at each first boot of a disk.
: > "$R/etc/machine-id"

# Management NIC (QEMU user networking) by its fixed MAC; private links come from the seed.
mkdir -p "$R/etc/systemd/network"
cat > "$R/etc/systemd/network/10-envbuild-mgmt.network" <<'NET'
[Match]
MACAddress=52:54:00:0e:b0:01

[Network]
DHCP=ipv4
NET

# SSH: the host key and the authorized key come from the seed disk at every boot and live in
# /run only, so no disk (and no store entry) ever holds a secret. No passwords at all.
rm -f "$R"/etc/ssh/ssh_host_*
mkdir -p "$R/etc/ssh/sshd_config.d"
cat > "$R/etc/ssh/sshd_config.d/envbuild.conf" <<'SSHD'
HostKey /run/envbuild/ssh_host_ed25519_key
AuthorizedKeysFile /run/envbuild/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
SSHD

# The seed disk (/dev/vdb) is a tar archive written by envbuild for each boot.
cat > "$R/usr/local/sbin/envbuild-seed" <<'SEED'
#!/bin/sh
set -eu
i=0
while [ ! -b /dev/vdb ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /run/envbuild
chmod 700 /run/envbuild
tar -xf /dev/vdb -C /run/envbuild
chmod 600 /run/envbuild/ssh_host_ed25519_key
if [ -s /run/envbuild/hostname ]; then hostname "$(cat /run/envbuild/hostname)"; fi
if [ -d /run/envbuild/network ]; then
  mkdir -p /run/systemd/network
  cp /run/envbuild/network/* /run/systemd/network/
fi
SEED
chmod 755 "$R/usr/local/sbin/envbuild-seed"
cat > "$R/etc/systemd/system/envbuild-seed.service" <<'UNIT'
[Unit]
Description=envbuild seed: SSH keys and private link addresses
DefaultDependencies=no
After=systemd-udevd.service
Before=ssh.service systemd-networkd.service network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/envbuild-seed

[Install]
WantedBy=multi-user.target
UNIT

# A small initramfs with just what a virtio guest needs: a faster direct-kernel boot under TCG.
mkdir -p "$R/etc/initramfs-tools/conf.d"
echo MODULES=list > "$R/etc/initramfs-tools/conf.d/envbuild"
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >> "$R/etc/initramfs-tools/modules"
chroot "$R" update-initramfs -u -k all >/dev/null 2>&1

chroot "$R" systemctl enable systemd-networkd.service envbuild-seed.service ssh.service >/dev/null 2>&1
# Nothing waits for the network or runs timers in a short-lived test VM.
chroot "$R" systemctl mask systemd-networkd-wait-online.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
  getty-static.service >/dev/null 2>&1
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/log/*.log
