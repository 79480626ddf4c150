#!/usr/bin/env bash
# Installs what the namespace lab and its tests run: real OpenSSH, BIRD 2,
# iproute2, sudo (non-root user tests), openssl (lab password hashes), ping.
# Idempotent: installs only what is missing. Needs root on Debian/Ubuntu.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
have /usr/sbin/sshd || need+=(openssh-server)
have ssh            || need+=(openssh-client)
have bird           || need+=(bird2)
have ip             || need+=(iproute2)
have sudo           || need+=(sudo)
have openssl        || need+=(openssl)
have ping           || need+=(iputils-ping)
have unshare        || need+=(util-linux)
have make           || need+=(make)
# The bundle's kube-proxy image carries this machine's iptables (a test
# builds it).
have xtables-nft-multi || need+=(iptables)
# --containers: what container nodes (lab up --containers) need on top.
if [ "${1:-}" = --containers ]; then
  have systemd-nspawn     || need+=(systemd-container)
  have debootstrap        || need+=(debootstrap)
  have shellcheck         || need+=(shellcheck)
fi
# --vm: what the real-node lab (make e2e) needs on top.
if [ "${1:-}" = --vm ]; then
  have qemu-system-x86_64 || need+=(qemu-system-x86)
  have qemu-img           || need+=(qemu-utils)
  have debootstrap        || need+=(debootstrap)
  have mkfs.ext4          || need+=(e2fsprogs)
  have ssh-keygen         || need+=(openssh-client)
  # The bundle: runc links libseccomp statically; kube-proxy's image
  # carries this machine's nft and conntrack.
  have gcc                || need+=(gcc libc6-dev)
  [ -f /usr/lib/x86_64-linux-gnu/libseccomp.a ] || need+=(libseccomp-dev)
  have nft                || need+=(nftables)
  have conntrack          || need+=(conntrack)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: need root to install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# BIRD 1.6 (Debian's bird; it conflicts with bird2), unpacked into the
# cache: tests parse `k8slab fabric config --dialect bird1` with it.
bird1=$HOME/.cache/k8slab/bird1
if [ ! -x "$bird1/usr/sbin/bird" ]; then
  tmp=$(mktemp -d)
  cd "$tmp"
  if ! apt-get download -qq bird 2>/dev/null; then
    apt-get update -qq
    apt-get download -qq bird
  fi
  cd - >/dev/null
  mkdir -p "$bird1"
  dpkg -x "$tmp"/bird_1.6*.deb "$bird1"
  rm -rf "$tmp"
fi
# The package may start a system bird/sshd: the lab runs its own per
# namespace and does not need or touch them.
mkdir -p /run/sshd
