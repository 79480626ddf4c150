#!/bin/sh
# reset.sh [-c CRI_SOCKET] STEP...: takes Kubernetes, Calico and etcd off
# a node. Each STEP is a part k8slab's reset runs (kubernetes, etcd,
# provisioned) or one of the steps below (tests run those alone, against
# stand-in tools). Output: removed=WHAT for everything found and removed,
# left=WHAT for what a check still finds (reset is done only when none),
# lap=NAME where each stretch of the work begins (reset's timings).
#
# K8SLAB_RESET_ROOT is unset on nodes: tests point the CNI configuration
# and kubeadm reset (--rootfs) at a stand-in root.
set +e
if [ "${K8SLAB_LAB_NODE:-}" = namespace ]; then
	echo "refused: a namespace-lab node shares the workstation's filesystem; reset would change the workstation itself" >&2
	exit 1
fi
root=${K8SLAB_RESET_ROOT:-}
cri=unix:///run/containerd/containerd.sock
ipiperr=

gone() { echo "removed=$1"; }
lap() { echo "lap=$1"; }
# Link names from the kernel's list: naming a link that may not exist
# (ip link show NAME) can create it (see remove_ipip).
links() { ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1; }

# kubernetes: everything kubeadm, the kubelet, kube-proxy and Calico made.
kubernetes() {
	lap units; stop_kubeadm_units
	lap kubelet; stop_kubelet
	lap pods
	if command -v crictl >/dev/null 2>&1 && [ -S /run/containerd/containerd.sock ]; then remove_pods; fi
	lap "kubeadm reset"; kubeadm_reset
	lap files; remove_files; remove_cni_conf
	lap links; remove_links; remove_ipip
	lap rules; remove_rules
	lap check; check_kubernetes
}

# stop_kubeadm_units stops k8slab's detached kubeadm runs (transient
# units, gone once they end) in two or three systemctl calls: asking and
# resetting each unit apart took six, 14.1 s of a reinstall on the loaded
# control-plane VM.
stop_kubeadm_units() {
	running=$(systemctl list-units --no-legend --plain --state=active,activating,deactivating \
		k8slab-kubeadm-init.service k8slab-kubeadm-init-rest.service k8slab-kubeadm-join.service 2>/dev/null | awk '{print $1}')
	if [ -n "$running" ]; then
		# shellcheck disable=SC2086 # one unit name per word
		systemctl stop $running
		for u in $running; do gone "running ${u%.service}"; done
	fi
	systemctl reset-failed 'k8slab-kubeadm-*' 2>/dev/null
}

# stop_kubelet kills the kubelet, then every process of every pod at once
# (kubepods.slice: the systemd cgroup driver's), before crictl tidies up:
# on the control plane the API server, controller-manager and scheduler
# kept the VM busy until their pods were stopped, and meanwhile the
# kubelet's graceful stop took 16 s and one crictl listing about 20 s
# (killed first, the first pod was stopped 2 s after the kubelet's stop
# instead of 40 s). Nothing in a reset needs either to end gracefully:
# their state is deleted next. The kubelet is killed first so it restarts
# no container, and stopped so systemd does not restart it.
stop_kubelet() {
	if systemctl is-active -q kubelet; then
		systemctl kill --signal=SIGKILL kubelet
		systemctl stop kubelet
		gone "kubelet running"
	fi
	systemctl kill --signal=SIGKILL kubepods.slice >/dev/null 2>&1
}

# remove_pods removes every pod sandbox, one crictl per pod and all at
# once: crictl rmp -a stops them one after the other, which made the pods
# 1m30s of the emulated control plane's 2 min reset. A call that failed
# (xargs then exits non-zero) gets the serial pass. Whether any is left
# is the check's to say (check_pods).
#
# containerd takes a pod's network down through the CNI network it has
# loaded now, not the one the pod was made with, and Calico's plugin
# releases the pod's addresses through the API server: with the control
# plane reset beside it, that failed, containerd kept the sandbox, and
# CoreDNS's and calico-kube-controllers' sandboxes were left on the
# control plane after every reset. The cluster's addresses go with its
# datastore, so the removal runs with a loopback-only network loaded
# first (offline_cni); the pods' Calico interfaces go with their network
# namespaces, and any left with the links below.
remove_pods() {
	pods=$(crictl pods -q 2>/dev/null)
	if [ -n "$pods" ]; then
		offline_cni
		# shellcheck disable=SC2086 # one pod ID per word
		printf '%s\n' $pods | xargs -n 1 -P 0 crictl --timeout 2m rmp -f >/dev/null 2>&1 ||
			crictl --timeout 2m rmp -fa >/dev/null 2>&1 ||
			{ offline_cni && crictl --timeout 2m rmp -fa >/dev/null 2>&1; }
		rm -f "$root/etc/cni/net.d/$offline_conf"
		gone "pod sandboxes"
	fi
}

# offline_cni writes a network of the loopback plugin alone first in
# /etc/cni/net.d (containerd loads only the first) and waits until
# containerd has loaded it (it watches the directory, and had it within a
# second on the container lab's nodes; 20 s at most, then the removal
# goes on regardless and the check says what is left).
offline_conf=00-k8slab-reset.conflist
offline_cni() {
	[ -d "$root/etc/cni/net.d" ] && [ -x "$root/opt/cni/bin/loopback" ] || return 1
	[ -e "$root/etc/cni/net.d/$offline_conf" ] ||
		echo '{"cniVersion":"1.0.0","name":"k8slab-reset","plugins":[{"type":"loopback"}]}' >"$root/etc/cni/net.d/$offline_conf"
	i=0
	while [ $i -lt 40 ]; do
		crictl info 2>/dev/null | grep -q '"k8slab-reset"' && return 0
		sleep 0.5
		i=$((i + 1))
	done
	return 1
}

# check_pods reports pod sandboxes containerd still has (none when it
# does not answer: then it has none running either).
check_pods() {
	command -v crictl >/dev/null 2>&1 || return 0
	n=$(crictl pods -q 2>/dev/null | wc -l)
	[ "$n" -eq 0 ] || echo "left=$n pod sandboxes (crictl pods)"
}

# kubeadm_reset runs kubeadm reset. Finding no stacked etcd manifest,
# kubeadm reset deletes /var/lib/etcd anyway (its default data
# directory): on a member of k8slab's external etcd that is the member's
# data, before etcd-backup has read it and while etcd still runs (an
# emulated node's etcd then crash-looped: "member already bootstrapped").
# Those nodes skip kubeadm's etcd phase; the etcd part removes their etcd
# after the backup.
#
# kubeadm reset is pointed at no kubeconfig: with admin.conf it first
# reads kubeadm-config from the API server, which a reset that takes the
# whole cluster down has no use for (k8slab gives it the CRI socket, and
# the rest are kubeadm's defaults, as k8slab installs them) and which
# cost about a minute of a loaded API server on the emulated lab. The
# pods are gone before it runs: its own CRI calls wait 2 s and gave up on
# each sandbox a loaded containerd stopped more slowly (21 s of retries).
kubeadm_reset() {
	command -v kubeadm >/dev/null 2>&1 || return 0
	[ -e "$root/etc/kubernetes/kubelet.conf" ] || [ -e "$root/etc/kubernetes/manifests" ] || [ -e "$root/var/lib/kubelet/config.yaml" ] || return 0
	set -- -f --kubeconfig /nonexistent/k8slab-reset-reads-no-cluster --cri-socket "$cri"
	[ -e "$root/etc/systemd/system/etcd.service" ] && set -- "$@" --skip-phases remove-etcd-member
	[ -n "$root" ] && set -- "$@" --rootfs "$root"
	if kubeadm reset "$@" >"$root/var/log/k8slab-reset.log" 2>&1; then
		gone "kubeadm state"
	else
		gone "kubeadm state (kubeadm reset failed: see /var/log/k8slab-reset.log)"
	fi
}

# remove_files: the cluster's state, and its pods' logs: the kubelet names a
# container's log after its restart count and reads that count back from
# /var/log/pods when it starts a container anew, so a static pod (the same
# UID in every cluster) showed RESTARTS 2 after two reinstalls.
remove_files() {
	awk '$2 ~ "^/var/lib/kubelet" {print $2}' /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
	for p in /etc/kubernetes /var/lib/kubelet /var/lib/cni /var/lib/calico /var/run/calico /var/log/calico /var/log/pods /var/log/containers \
		/etc/k8slab/kubeadm-init.yaml /etc/k8slab/kubeadm-join.yaml /etc/k8slab/kubeadm-init.done /etc/k8slab/kubeadm-init-apiserver.done /etc/k8slab/kubeadm-patches /root/.kube/config; do
		[ -e "$p" ] && { rm -rf "$p"; gone "$p"; }
	done
	rm -f /var/log/k8slab/k8slab-kubeadm-*
}

# containerd's CRI plugin watches /etc/cni/net.d and makes it again,
# empty, as soon as it is removed (seen on all four VMs): the CNI
# configuration in it is what reset removes and checks, the directory
# stays.
remove_cni_conf() {
	if [ -n "$(ls -A "$root/etc/cni/net.d" 2>/dev/null)" ]; then
		find "$root/etc/cni/net.d" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
		gone "CNI configuration in /etc/cni/net.d"
	fi
}

check_cni_conf() {
	find "$root/etc/cni/net.d" -mindepth 1 -maxdepth 1 2>/dev/null | while read -r f; do echo "left=/etc/cni/net.d/${f##*/}"; done
}

remove_links() {
	for l in $(links); do
		case "$l" in cali*|vxlan.calico|vxlan-v6.calico|kube-ipvs0|tunl0) ip link delete "$l" 2>/dev/null && gone "link $l";; esac
	done
}

# remove_ipip removes tunl0, the ipip module's fallback device, with the
# module. It never names tunl0 to the kernel while it may not exist: a
# lookup by name (ip link show tunl0) loads ipip through its netdev-tunl0
# alias and so makes tunl0 (seen on a fresh node VM), and ipip once came
# back within seconds of its removal (once in ~70 tries by hand; most
# likely udev, handling the new tunl0's event late, looked it up by
# name). So existence is read from the link list, udev may finish before
# and after the removal, and the list is read again. A module busy for a
# moment after the pods went is tried for up to 20 s; the last error goes
# with the "left" line.
remove_ipip() {
	if has_tunl0; then
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			settle
			if ipiperr=$(modprobe -r ipip 2>&1); then
				settle
				has_tunl0 || { ipiperr=; gone "link tunl0 (ipip module)"; break; }
				ipiperr="ipip loaded again after its removal"
			fi
			ipiperr=$(printf %s "$ipiperr" | tr '\n' ' ')
			sleep 2
		done
	fi
}
has_tunl0() { links | grep -qx tunl0; }
settle() { command -v udevadm >/dev/null 2>&1 && udevadm settle --timeout=10 >/dev/null 2>&1; }

remove_rules() {
	for fam in ip ip6; do
		nft list table $fam kube-proxy >/dev/null 2>&1 && nft delete table $fam kube-proxy && gone "nft table $fam kube-proxy"
	done
	nft list tables 2>/dev/null | awk '/calico/ {print $2, $3}' | while read -r fam table; do
		nft delete table "$fam" "$table" && gone "nft table $fam:$table"
	done
	# Only kube-proxy's, the kubelet's and Calico's iptables chains and
	# the rules that jump to them: the node's own rules stay.
	for c in iptables ip6tables; do
		command -v $c-save >/dev/null 2>&1 || continue
		if $c-save 2>/dev/null | grep -qE 'KUBE-|cali-|cali:'; then
			$c-save | grep -vE 'KUBE-|cali-|cali:' | $c-restore && gone "$c KUBE-*/cali-* chains"
		fi
	done
	if command -v ipvsadm >/dev/null 2>&1 && [ -n "$(ipvsadm -Sn 2>/dev/null)" ]; then ipvsadm -C && gone "ipvs services"; fi
	# Calico's ipsets (iptables dataplane), free once no rule names them.
	if command -v ipset >/dev/null 2>&1; then
		for set in $(ipset list -n 2>/dev/null | grep '^cali'); do ipset destroy "$set" && gone "ipset $set"; done
	fi
	# Calico's routes (protocol 80: BIRD's to other nodes' pod blocks,
	# the blackhole for this node's own) outlive calico-node, and the
	# next cluster's IPAM may give those blocks to other nodes: a stale
	# blackhole would swallow their pods' traffic.
	for fam in -4 -6; do
		if [ -n "$(ip $fam route show proto 80 2>/dev/null)" ]; then ip $fam route flush proto 80 && gone "ip $fam routes of Calico (protocol 80)"; fi
	done
}

check_links() {
	for l in $(links); do
		case "$l" in cali*|vxlan.calico|vxlan-v6.calico|kube-ipvs0|tunl0) echo "left=link $l${ipiperr:+ (modprobe -r ipip: $ipiperr)}";; esac
	done
}

# check_kubernetes reports anything Kubernetes or Calico still on the node.
check_kubernetes() {
	check_pods
	check_links
	nft list ruleset 2>/dev/null | grep -qE 'KUBE-|kube-proxy|cali' && echo "left=nft rules (KUBE-/kube-proxy/cali)"
	for fam in -4 -6; do [ -z "$(ip $fam route show proto 80 2>/dev/null)" ] || echo "left=ip $fam routes of Calico (protocol 80)"; done
	ipset list -n 2>/dev/null | grep -q '^cali' && echo "left=Calico's ipsets"
	systemctl is-active -q kubelet && echo "left=kubelet running"
	for p in /etc/kubernetes /var/lib/kubelet /var/log/pods; do [ -e "$p" ] && echo "left=$p"; done
	check_cni_conf
}

# etcd: k8slab's external etcd member, after etcd-backup has its
# snapshot. etcd is killed rather than stopped (its data is deleted next,
# and a graceful stop only has a leader hand over to members that are
# stopping too); systemd is reloaded once: disable would reload it a
# first time, and each reload took seconds on the emulated VMs (the etcd
# part was 21-28 s there).
etcd() {
	if [ -e /etc/systemd/system/etcd.service ] || [ -d /var/lib/etcd ] || [ -d /etc/etcd ]; then
		lap "etcd stop"
		systemctl kill --signal=SIGKILL etcd >/dev/null 2>&1
		systemctl disable --now --no-reload etcd >/dev/null 2>&1
		lap files
		rm -rf /etc/systemd/system/etcd.service /etc/etcd /var/lib/etcd
		lap reload
		systemctl daemon-reload
		gone "etcd service and data"
	fi
	lap check
	systemctl is-active -q etcd && echo "left=etcd running"
	[ -e /var/lib/etcd ] && echo "left=/var/lib/etcd"
}

# provisioned: what provision installed (containerd, images, binaries,
# units, k8slab's OS settings files), for reset --all.
provisioned() {
	[ -e /etc/systemd/system/containerd.service ] || return 0
	systemctl disable --now kubelet containerd >/dev/null 2>&1
	awk '$2 ~ "^/run/containerd|^/var/lib/containerd" {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
	rm -rf /etc/containerd /var/lib/containerd /run/containerd /etc/crictl.yaml /opt/cni \
		/etc/systemd/system/containerd.service /etc/systemd/system/kubelet.service /etc/systemd/system/kubelet.service.d \
		/usr/local/bin/kubeadm /usr/local/bin/kubelet /usr/local/bin/kubectl /usr/local/bin/etcd /usr/local/bin/etcdctl \
		/usr/local/bin/containerd /usr/local/bin/containerd-shim-runc-v2 /usr/local/bin/ctr /usr/local/bin/crictl /usr/local/sbin/runc \
		/etc/sysctl.d/99-k8slab.conf /etc/modules-load.d/k8slab.conf /etc/k8slab /var/lib/k8slab/files.state /var/log/k8slab
	systemctl daemon-reload
	gone "containerd, images, binaries, units and k8slab's OS settings files"
}

while getopts c: opt; do
	case $opt in
	c) cri=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
for step in "$@"; do
	case $step in
	kubernetes|etcd|provisioned|stop_kubeadm_units|stop_kubelet|remove_pods|check_pods|kubeadm_reset|remove_files|remove_cni_conf|check_cni_conf|remove_links|remove_ipip|remove_rules|check_links|check_kubernetes)
		"$step" ;;
	*) echo "reset.sh: no step $step" >&2; exit 2 ;;
	esac
done
true
