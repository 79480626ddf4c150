#!/usr/bin/env bash
# Builds the lab's Debian 12 node image: debootstrap minbase + what a fresh
# cloud/GNS3 node has (systemd, sshd, iproute2, iptables/nftables, ...),
# NOT containerd, runc or anything Kubernetes: k8slab installs those.
# The disk is made without loop devices (mkfs.ext4 -d) and converted to
# qcow2; nodes boot overlays of it. Per-node identity (machine-id, SSH
# host key, hostname, address) is created at first boot, so one image
# serves every node. Needs root. Usage: build-image.sh CACHE_DIR PUBKEY_FILE
set -euo pipefail
cache=${1:?usage: build-image.sh CACHE_DIR PUBKEY_FILE}
pubkey=${2:?usage: build-image.sh CACHE_DIR PUBKEY_FILE}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/debian-node.sh
. "$here/../lib/debian-node.sh"
out=$cache/base.qcow2
# The cache is keyed by this script: changing how the image is made
# rebuilds it, and node disks made from the old image are dropped.
stamp=$(cat "$0" "$here/../lib/debian-node.sh" | sha256sum | cut -d' ' -f1)
if [ -f "$out" ] && [ "$(cat "$cache/image.sha256" 2>/dev/null)" = "$stamp" ]; then
  echo "image: cached at $out"; exit 0
fi
rm -rf "$cache/nodes"
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
pkgs=systemd,systemd-sysv,dbus,udev,kmod,initramfs-tools,linux-image-amd64,openssh-server,iproute2,iptables,nftables,conntrack,socat,ebtables,ethtool,ca-certificates,sudo,procps,curl,libnss-myhostname
echo -n "image: "
debian_node "$root" "$pkgs" "$work/debootstrap.log"
echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" > "$root/etc/fstab"
install -m 0600 "$pubkey" "$root/root/.ssh/authorized_keys"
# The lab's management path gets etcd's CPU weight. The image has no
# pam_systemd, so sshd and every command run over SSH share ssh.service;
# at the default weight (100), next to etcd's 1000 in system.slice, a
# handshake to the saturated emulated control plane took over 4 minutes
# after an install; with 1000 set live, 14-29 s.
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat > "$root/etc/systemd/system/ssh.service.d/k8slab-lab.conf" <<'CONF'
[Service]
CPUWeight=1000
CONF
cat > "$root/etc/systemd/system/k8slab-hostkey.service" <<'UNIT'
[Unit]
Description=Generate this node's SSH host key on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/k8slab-hostkey.service "$root/etc/systemd/system/multi-user.target.wants/k8slab-hostkey.service"
# The ip= kernel argument becomes a networkd config (systemd-network-generator).
ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
mkdir -p "$root/etc/systemd/system/sysinit.target.wants"
ln -sf /lib/systemd/system/systemd-network-generator.service "$root/etc/systemd/system/sysinit.target.wants/systemd-network-generator.service"
# Nothing to wait for on an isolated lab network.
ln -sf /dev/null "$root/etc/systemd/system/systemd-networkd-wait-online.service"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily-upgrade.timer"
chroot "$root" apt-get clean
cp -L "$root/vmlinuz" "$work/vmlinuz"
cp -L "$root/initrd.img" "$work/initrd.img"
echo "image: writing ext4 and qcow2"
mkfs.ext4 -q -F -L k8slab-root -d "$root" "$work/base.raw" 10G
qemu-img convert -O qcow2 "$work/base.raw" "$work/base.qcow2"
mv "$work/vmlinuz" "$work/initrd.img" "$cache/"
mv "$work/base.qcow2" "$out"
echo "$stamp" > "$cache/image.sha256"
echo "image: ready at $out"
