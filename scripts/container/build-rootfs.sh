#!/usr/bin/env bash
# Builds the root filesystem that container nodes (k8slab lab up
# --containers) boot with systemd-nspawn: Debian 12 minbase with what a
# fresh cloud node has (systemd, sshd, iproute2, iptables/nftables, ...),
# NOT containerd, runc or anything Kubernetes: k8slab installs those, as on
# any machine. No kernel: a container node runs on the workstation's.
# Per-node identity (machine-id, hostname, SSH host key, the lab's key) is
# written by `lab up` into each node's own copy-on-write layer, so one
# rootfs serves every node of every lab. Needs root.
# Usage: build-rootfs.sh CACHE_DIR
set -euo pipefail
cache=${1:?usage: build-rootfs.sh CACHE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/debian-node.sh
. "$here/../lib/debian-node.sh"
out=$cache/rootfs
# The cache is keyed by this script and the node set-up it installs:
# changing either rebuilds the rootfs.
stamp=$(cat "$0" "$here/node-setup.sh" "$here/../lib/debian-node.sh" | sha256sum | cut -d' ' -f1)
if [ -d "$out" ] && [ "$(cat "$cache/rootfs.sha256" 2>/dev/null)" = "$stamp" ]; then
  echo "rootfs: cached at $out"; exit 0
fi
# Running container nodes use it as their overlay's lower layer.
if grep -qs "lowerdir=$out," /proc/[0-9]*/mountinfo; then
  echo "rootfs: $out is in use by running container nodes: take their lab down first (k8slab lab down)" >&2
  exit 1
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
pkgs=systemd,systemd-sysv,dbus,kmod,openssh-server,iproute2,iptables,nftables,conntrack,socat,ebtables,ethtool,ca-certificates,sudo,procps,libnss-myhostname
echo -n "rootfs: "
debian_node "$root" "$pkgs" "$work/debootstrap.log"
# The container's network is made by the lab (its namespace, eth0, the
# default route): nothing inside configures it. No consoles, no timers.
for u in console-getty.service getty-static.service apt-daily.timer apt-daily-upgrade.timer \
         systemd-networkd-wait-online.service e2scrub_reap.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
install -D -m 0755 "$here/node-setup.sh" "$root/usr/local/lib/k8slab/node-setup.sh"
cat > "$root/etc/systemd/system/k8slab-container-node.service" <<'UNIT'
[Unit]
Description=k8slab container node: writable cgroups, the workstation's kernel settings kept out of reach
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target containerd.service kubelet.service ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/k8slab/node-setup.sh

[Install]
WantedBy=sysinit.target
UNIT
mkdir -p "$root/etc/systemd/system/sysinit.target.wants"
ln -sf /etc/systemd/system/k8slab-container-node.service "$root/etc/systemd/system/sysinit.target.wants/k8slab-container-node.service"
chroot "$root" apt-get clean
rm -rf "$root/var/lib/apt/lists"/* "$root/usr/share/doc"/* "$root/usr/share/man"/*
rm -rf "$out"
mv "$root" "$out"
echo "$stamp" > "$cache/rootfs.sha256"
echo "rootfs: ready at $out ($(du -sh "$out" | cut -f1))"
