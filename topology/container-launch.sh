#!/bin/sh
# Starts one container node of the lab and lives as long as it does: a
# cgroup of its own in every hierarchy, the shared rootfs under the node's
# copy-on-write layer (mounted in a private mount namespace, so it goes
# away with the node and the workstation's mount table never sees it),
# then systemd-nspawn booting systemd in the node's network namespace.
# Usage: container-launch.sh NAME ROOTFS NODE_DIR NETNS CGROUP
set -eu
name=$1 rootfs=$2 dir=$3 netns=$4 cg=$5

# The workstation's PID 1 may not be systemd (then nspawn cannot ask it
# for a delegated unit): make the node's cgroup by hand and move in, so
# that nspawn's cgroup namespace is rooted there and the node's kubelet
# sees only its own subtree.
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
	mkdir -p "/sys/fs/cgroup/$cg"
	echo $$ >"/sys/fs/cgroup/$cg/cgroup.procs"
else
	for h in /sys/fs/cgroup/*; do
		[ -e "$h/cgroup.procs" ] || continue
		mkdir -p "$h/$cg"
		# A new cpuset has no CPUs or memory nodes: nothing could join it.
		if [ -e "$h/cpuset.cpus" ]; then
			cat "$h/cpuset.cpus" >"$h/$cg/cpuset.cpus"
			cat "$h/cpuset.mems" >"$h/$cg/cpuset.mems"
		fi
		echo $$ >"$h/$cg/cgroup.procs"
	done
fi

# kubelet reads /dev/kmsg (its OOM watcher); keyctl is allowed because
# runc joins a session keyring for every container it starts (nspawn's
# default filter answers EPERM: "unable to join session keyring").
# containerd's store is a plain directory: its overlay snapshots cannot
# sit on the node's overlay root.
# shellcheck disable=SC2016 # expanded by the inner shell
exec unshare --mount --propagation private -- sh -c '
set -eu
mount -t overlay overlay -o "lowerdir=$2,upperdir=$1/upper,workdir=$1/work" "$1/root"
shift 2
exec "$@"' sh "$dir" "$rootfs" \
	systemd-nspawn --quiet --register=no --keep-unit \
	--directory="$dir/root" --machine="$name" \
	--network-namespace-path="/run/netns/$netns" \
	--capability=all --private-users=no \
	--bind=/dev/kmsg --bind="$dir/containerd:/var/lib/containerd" \
	--system-call-filter=@keyring \
	--resolv-conf=off --timezone=off --link-journal=no \
	--console=read-only --boot
