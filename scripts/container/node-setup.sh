#!/bin/sh
# Runs inside a container node at boot (k8slab-container-node.service),
# before containerd and the kubelet: what a kubelet in a container needs
# that a machine of its own would not.
set -eu

# cgroups. systemd-nspawn gives the node a cgroup namespace rooted at its
# own cgroup (`lab up` made one per node in every hierarchy), so each
# mount below shows only this node's subtree; on cgroup v1 it mounts the
# controllers read-only, and the kubelet must create kubepods.slice in
# each ("mkdir /sys/fs/cgroup/cpuset/kubepods.slice: read-only file
# system" otherwise). Only this mount's flag changes (remount,bind): the
# hierarchy itself is the workstation's, and remounting it is refused.
for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
	if ! mountpoint -q "$d"; then continue; fi
	case "$(stat -fc %T "$d")" in
	cgroupfs | cgroup2fs) mount -o remount,bind,rw "$d" ;;
	esac
done

# The node's own network namespace: its /proc/sys/net is writable, as on
# a machine (kube-proxy, Calico and k8slab's provisioning set forwarding,
# bridge netfilter and conntrack timeouts there). nspawn leaves it
# read-only when the namespace is given to it rather than made by it.
mount --bind /proc/sys/net /proc/sys/net
mount -o remount,bind,rw /proc/sys/net

# Kernel settings. The rest of /proc/sys stays read-only: it is the
# workstation's kernel. The kubelet sets these six at start unless
# they already hold its values (on a node the workstation shared, it once
# turned the host's vm.overcommit_memory 0->1 and kernel.panic 1->10), so
# the node sees its own copies holding those values: the kubelet reads
# what it wants and writes nothing.
dir=/run/k8slab-sysctl
mkdir -p "$dir"
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
	kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
	k=${kv%%=*}
	f=$dir/$(echo "$k" | tr / .)
	echo "${kv#*=}" >"$f"
	mount --bind "$f" "/proc/sys/$k"
done

# product_uuid. kubeadm and k8slab's preflight tell machines apart by it
# and the kubelet reports it as the Node's systemUUID; a container would
# show the workstation's, or none on a host without DMI (as here). `lab
# up` wrote this node's own; it is shown at the usual path, in this
# node's mount namespace only.
uuid=/etc/k8slab-container/product_uuid
if [ -s "$uuid" ]; then
	if [ -e /sys/class/dmi/id/product_uuid ]; then
		mount -o ro,bind "$uuid" /sys/class/dmi/id/product_uuid
	else
		# sysfs cannot gain a directory: a tmpfs takes /sys/class's place,
		# holding dmi/id and every class of the real one bind-mounted
		# (they stay live: a new network device still shows in net).
		real=/run/k8slab-sysclass
		mkdir -p "$real"
		mount --bind /sys/class "$real"
		mount -t tmpfs -o mode=0755,size=64k k8slab-sysclass /sys/class
		for d in "$real"/*; do
			mkdir "/sys/class/${d##*/}"
			mount --bind "$d" "/sys/class/${d##*/}"
		done
		mkdir -p /sys/class/dmi/id
		cp "$uuid" /sys/class/dmi/id/product_uuid
		mount -o remount,ro,bind /sys/class
		umount "$real"
		rmdir "$real"
	fi
fi
