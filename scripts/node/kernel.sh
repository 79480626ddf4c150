#!/bin/sh
# kernel.sh turns swap off (now and in fstab), loads and persists the
# modules and sysctls kubeadm's preflight checks. It changes only what
# differs and prints changed=0 when the node was already right.
# kernel.sh [ROOT]: ROOT (tests only) is a stand-in for / under which
# /proc and /etc are read and written.
set -e
r=${1:-}
changed=0
# /proc/swaps: a header line, then one line per active swap area.
swap=; { read -r _; read -r swap; } < "$r/proc/swaps" 2>/dev/null || true
if [ -n "$swap" ]; then swapoff -a; changed=1; fi
if grep -qE '^[^#][^[:space:]]*[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]' "$r/etc/fstab" 2>/dev/null; then
	sed -i.k8slab-bak -E 's/^([^#][^[:space:]]*[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]].*)$/# \1 # swap disabled by k8slab/' "$r/etc/fstab"
	changed=1
fi
mods='overlay
br_netfilter'
if [ "$(cat "$r/etc/modules-load.d/k8slab.conf" 2>/dev/null)" != "$mods" ]; then
	mkdir -p "$r/etc/modules-load.d"; printf '%s\n' "$mods" > "$r/etc/modules-load.d/k8slab.conf"; changed=1
fi
# What the modules provide, not whether they are loaded: a kernel with
# them built in (a container node's, many cloud kernels) has no module
# to load and may list neither in /sys/module.
grep -qw overlay "$r/proc/filesystems" || { modprobe overlay; changed=1; }
[ -d "$r/proc/sys/net/bridge" ] || { modprobe br_netfilter; changed=1; }
sysctls='net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1'
if [ "$(cat "$r/etc/sysctl.d/99-k8slab.conf" 2>/dev/null)" != "$sysctls" ]; then
	mkdir -p "$r/etc/sysctl.d"; printf '%s\n' "$sysctls" > "$r/etc/sysctl.d/99-k8slab.conf"; changed=1
fi
# Read from /proc/sys with the shell's read, not sysctl -n: every process
# start cost 1-2 s on the saturated emulated control plane.
for k in net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables; do
	v=; read -r v < "$r/proc/sys/$k" || true
	[ "$v" = 1 ] || { echo 1 > "$r/proc/sys/$k"; changed=1; }
done
echo "changed=$changed"
