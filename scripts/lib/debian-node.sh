#!/usr/bin/env bash
# Shared by the lab's node builders (scripts/vm/build-image.sh,
# scripts/container/build-rootfs.sh): a Debian 12 minbase root with what a
# fresh cloud or GNS3 node has, and no identity of its own. Sourced.

# debian_mirror is this machine's own bookworm mirror (the one apt uses),
# or K8SLAB_DEBIAN_MIRROR.
debian_mirror() {
  local m
  m=${K8SLAB_DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p; s/^deb \(http[^ ]*debian\)\/* bookworm .*/\1/p' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1 || true)}
  echo "${m:-http://deb.debian.org/debian}"
}

# debian_node ROOT PACKAGES LOG: debootstrap minbase with the packages,
# then take away what makes a node itself: machine-id, hostname and SSH
# host keys come later, per node. Lab nodes have no DNS server and must
# never aim traffic outside the lab: no nameserver line, each node's own
# name from nss-myhostname. root's password is the GNS3 image's (gns3).
# sshd takes root and passwords like the GNS3 image, and one ed25519 host
# key, made per node (RSA key generation costs seconds under emulation).
debian_node() {
  local root=$1 pkgs=$2 log=$3 mirror
  mirror=$(debian_mirror)
  echo "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" > "$log" 2>&1 || {
    tail -30 "$log" >&2; return 1; }
  : > "$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id" "$root/etc/hostname" "$root"/etc/ssh/ssh_host_*
  printf '# k8slab lab node: no DNS server on this network\n' > "$root/etc/resolv.conf"
  sed -i 's/^hosts:.*/hosts:          files myhostname dns/' "$root/etc/nsswitch.conf"
  echo "root:gns3" | chroot "$root" chpasswd
  install -d -m 0700 "$root/root/.ssh"
  cat > "$root/etc/ssh/sshd_config.d/k8slab.conf" <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin yes
PasswordAuthentication yes
UseDNS no
CONF
}
