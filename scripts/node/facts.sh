#!/bin/sh
# facts.sh: everything k8slab needs to know about a node, in one round
# trip; it only reads. Output: key=value lines (provision.ParseFacts).
# Files are read with the shell's own read, not cat or uname: on the
# saturated emulated control plane every process start cost 1-2 s.
# shellcheck disable=SC1091 # os-release is the node's, read at run time
[ -r /etc/os-release ] && . /etc/os-release
echo "os_id=${ID:-}"
echo "os_version=${VERSION_ID:-}"
echo "os_pretty=${PRETTY_NAME:-}"
v=; { read -r v < /proc/sys/kernel/osrelease; } 2>/dev/null; echo "kernel=$v"
echo "arch=$(uname -m)"
v=; { read -r v < /proc/sys/kernel/hostname; } 2>/dev/null; echo "hostname=$v"
echo "cpus=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
awk '/^MemTotal:/{print "mem_kb=" $2} /^SwapTotal:/{print "swap_kb=" $2}' /proc/meminfo
dev=$(ip -4 route show default 2>/dev/null | awk '{for(i=1;i<NF;i++) if($i=="dev"){print $(i+1); exit}}')
echo "default_iface=$dev"
[ -n "$dev" ] && echo "default_addr=$(ip -4 -o addr show dev "$dev" 2>/dev/null | awk '{print $4; exit}')"
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then echo "cgroup_fs=cgroup2fs"; else echo "cgroup_fs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"; fi
v=; { read -r v < /etc/machine-id; } 2>/dev/null; echo "machine_id=$v"
v=; { read -r v < /sys/class/dmi/id/product_uuid; } 2>/dev/null; echo "product_uuid=$v"
echo "containerd_path=$(command -v containerd 2>/dev/null)"
echo "kubelet_path=$(command -v kubelet 2>/dev/null)"
echo "lab_node=${K8SLAB_LAB_NODE:-}"
r=/etc/resolv.conf; [ -s /run/systemd/resolve/resolv.conf ] && r=/run/systemd/resolve/resolv.conf
echo "nameservers=$(grep -cE '^[[:space:]]*nameserver[[:space:]]' "$r" 2>/dev/null)"
# CAP_SYS_RESOURCE (bit 24) in the bounding set: a container node's lacks
# it, and runc there cannot lower a container's OOM score.
c=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status 2>/dev/null)
if [ -n "$c" ] && [ $((0x$c >> 24 & 1)) = 1 ]; then echo sys_resource=yes; else echo sys_resource=no; fi
# ipip, never by looking tunl0 up: a lookup by name loads ipip and makes tunl0.
v=; { read -r v < /proc/sys/kernel/osrelease; } 2>/dev/null
if [ -d /sys/module/ipip ] || grep -qs '/ipip\.ko' "/lib/modules/$v/modules.dep" "/lib/modules/$v/modules.builtin"; then echo ipip=yes; else echo ipip=no; fi
true
