package install

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/phase"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/internal/ssh"
)

// ResetOptions say how far reset goes.
type ResetOptions struct {
	// All also removes what provisioning installed: containerd and its
	// images, the binaries, units and OS settings files.
	All bool
	// NoBackup skips the etcd snapshot before etcd's data is deleted.
	NoBackup bool
}

// ResetPhases undo an installation. External etcd is snapshotted after
// Kubernetes is gone from every node and before its own data goes: the
// snapshot then comes from an etcd that no API server writes to, on nodes
// whose kubelets are stopped (85 s on the busy emulated lab).
// kubeadm reset removes a stacked etcd with the rest of the control
// plane, so that one is snapshotted first.
func ResetPhases(c *Context, o ResetOptions) []phase.Phase {
	kube, backup := &ResetNodes{c, o, resetKubernetes}, &EtcdBackup{c, o}
	ps := []phase.Phase{backup, kube}
	if !c.Cluster.StackedEtcd() {
		ps = []phase.Phase{kube, backup, &ResetNodes{c, o, resetEtcd}}
	}
	if o.All {
		ps = append(ps, &ResetNodes{c, o, resetProvisioned})
	}
	return append(ps, &ForgetRecord{c})
}

// EtcdBackup saves a snapshot of etcd in the run directory before reset
// deletes its data, through the same SSH tunnel the install used.
type EtcdBackup struct {
	*Context
	opts ResetOptions
}

func (*EtcdBackup) Name() string { return "etcd-backup" }

func (b *EtcdBackup) Plan() []phase.Step {
	if b.opts.NoBackup {
		return []phase.Step{{Action: "no etcd backup (--no-backup)"}}
	}
	return []phase.Step{{Node: b.Cluster.Etcd[0], Action: "etcd snapshot to the run directory (etcd-snapshot.db)"}}
}

func (b *EtcdBackup) Run(ctx context.Context) error {
	if b.opts.NoBackup {
		return nil
	}
	status := b.Runner.StatusWriter()
	acc, err := NewEtcdAccess(ctx, b.Cluster, b.Hosts)
	if err != nil {
		return err
	}
	if acc == nil {
		fmt.Fprintf(status, "etcd-backup: no etcd CA on %s: nothing to back up\n", b.Cluster.Etcd[0])
		return nil
	}
	dir := b.Runner.RunDir()
	if dir == "" {
		dir = "."
	}
	path := filepath.Join(dir, "etcd-snapshot.db")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	n, from, err := bootstrap.SnapshotEtcd(ctx, acc.Endpoints, acc.PKI, acc.Dial, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		// Deleting the only copy of the cluster's state without a backup
		// is what --no-backup is for; it is never done silently.
		return fmt.Errorf("host %s: %w (etcd's data was not touched; --no-backup to reset without a snapshot)", acc.Node, err)
	}
	fmt.Fprintf(status, "etcd-backup: %s (%d bytes) from %s\n", path, n, from)
	return nil
}

// EtcdAccess is how k8slab reaches the cluster's etcd from the
// workstation: a client certificate issued from the cluster's etcd CA,
// and connections tunnelled through the SSH connection of the node that
// holds the CA (no etcd port needs to be reachable).
type EtcdAccess struct {
	Node      string
	Endpoints []string
	PKI       *bootstrap.EtcdPKI
	Dial      func(ctx context.Context, addr string) (net.Conn, error)
}

// NewEtcdAccess finds the etcd CA (k8slab's external etcd, or kubeadm's
// stacked one); nil when the node has none (never installed, or reset).
func NewEtcdAccess(ctx context.Context, cfg *cluster.Config, hosts map[string]host.Host) (*EtcdAccess, error) {
	node, caDir := cfg.Etcd[0], bootstrap.EtcdPKIDir
	if cfg.StackedEtcd() {
		caDir = "/etc/kubernetes/pki/etcd"
	}
	h := hosts[node]
	// Only a missing CA means no etcd: a node that did not answer (run
	// AB) must not turn reset's snapshot into "nothing to back up" before
	// etcd's data is removed.
	ca, err := readCA(ctx, h, caDir)
	if ca == nil || err != nil {
		return nil, err
	}
	pki, err := bootstrap.NewEtcdPKI(ca, nil)
	if err != nil {
		return nil, err
	}
	dial, err := etcdDial(cfg.Etcd, hosts, nil)
	if err != nil {
		return nil, err
	}
	acc := &EtcdAccess{Node: node, PKI: pki, Dial: dial}
	for _, e := range cfg.Etcd {
		t, _ := ssh.ParseTarget(e)
		acc.Endpoints = append(acc.Endpoints, "https://"+net.JoinHostPort(t.Host, "2379"))
	}
	return acc, nil
}

// ResetNodes undoes one part of an installation on the nodes it has:
// Kubernetes (kubeadm reset, then what kubeadm reset leaves behind,
// kubeadm #1822: CNI config, Calico's interfaces, kube-proxy's and
// Calico's rules), the external etcd, or (--all) what provisioning put
// there.
type ResetNodes struct {
	*Context
	opts ResetOptions
	part resetPart
}

type resetPart int

const (
	resetKubernetes resetPart = iota
	resetEtcd
	resetProvisioned
)

func (r *ResetNodes) Name() string {
	return [...]string{"reset", "reset-etcd", "reset-provisioned"}[r.part]
}

// Destroys lists what this part removes on a node, for the confirmation.
func (r *ResetNodes) Destroys(node string) []string {
	switch {
	case r.part == resetKubernetes:
		return []string{
			"kubelet stopped; pods and their containers removed; kubeadm reset -f",
			"/etc/kubernetes, /var/lib/kubelet, the CNI configuration in /etc/cni/net.d, /var/lib/cni, /var/lib/calico, k8slab's kubeadm configs and markers",
			"Calico and kube-proxy interfaces (cali*, tunl0, vxlan.calico, kube-ipvs0) and rules (nft table kube-proxy, KUBE-*/cali-* iptables chains)",
		}
	case r.part == resetEtcd && r.isEtcdMember(node):
		return []string{"etcd service, " + bootstrap.EtcdPKIDir + " and its data " + bootstrap.EtcdDataDir}
	case r.part == resetProvisioned:
		return []string{"containerd and every image, the Kubernetes/etcd/CNI binaries and units, k8slab's OS settings files, /etc/k8slab, /var/lib/k8slab"}
	}
	return nil
}

func (r *ResetNodes) isEtcdMember(node string) bool {
	if r.Cluster.StackedEtcd() {
		return false
	}
	for _, e := range r.Cluster.Etcd {
		if e == node {
			return true
		}
	}
	return false
}

func (r *ResetNodes) nodes() []string {
	var out []string
	for _, n := range r.Cluster.Nodes {
		if len(r.Destroys(n)) > 0 {
			out = append(out, n)
		}
	}
	return out
}

func (r *ResetNodes) Plan() []phase.Step {
	var steps []phase.Step
	for _, n := range r.nodes() {
		for _, a := range r.Destroys(n) {
			steps = append(steps, phase.Step{Node: n, Action: "remove " + a})
		}
	}
	return steps
}

func (r *ResetNodes) Run(ctx context.Context) error {
	script := [...]string{
		resetScript + resetCheckScript,
		resetEtcdScript + resetEtcdCheckScript,
		resetAllScript,
	}[r.part]
	return r.each(ctx, r.Name(), r.nodes(), nil, func(ctx context.Context, node string, t *run.Task) error {
		laps := &lapTimer{now: time.Now}
		var stderr strings.Builder
		err := t.Host.Run(ctx, host.Cmd{Command: resetPrelude + script + "\ntrue\n", Stdout: laps, Stderr: &stderr})
		if err != nil {
			return fmt.Errorf("%s: %w: %s", r.Name(), err, strings.TrimSpace(stderr.String()))
		}
		out := laps.out.String()
		if l := laps.done(); len(l) > 0 {
			t.Status("took: %s", strings.Join(l, ", "))
		}
		var removed, left []string
		for _, l := range strings.Split(out, "\n") {
			k, v, _ := strings.Cut(l, "=")
			switch k {
			case "removed":
				removed = append(removed, v)
			case "left":
				left = append(left, v)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("%s left behind: %s", r.Name(), strings.Join(left, "; "))
		}
		if len(removed) == 0 {
			t.Status("nothing to do")
		} else {
			t.Status("removed: %s", strings.Join(removed, ", "))
		}
		return nil
	})
}

// resetPrelude starts every part: each prints removed=<what> for
// everything it found and removed, left=<what> for what its check found.
const resetPrelude = `set +e
if [ "${K8SLAB_LAB_NODE:-}" = namespace ]; then
	echo "refused: a namespace-lab node shares the workstation's filesystem; reset would change the workstation itself" >&2
	exit 1
fi
gone() { echo "removed=$1"; }
# Link names from the kernel's list: naming a link that may not exist
# (ip link show NAME) can create it (see ipipRemoveScript).
links() { ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1; }
`

const resetScript = `echo lap=units
` + kubeadmUnitsStopScript + `
echo lap=kubelet
` + kubeletStopScript + `
echo lap=pods
if command -v crictl >/dev/null 2>&1 && [ -S /run/containerd/containerd.sock ]; then
` + podRemoveScript + `
fi
echo lap=kubeadm reset
if command -v kubeadm >/dev/null 2>&1 && { [ -e /etc/kubernetes/kubelet.conf ] || [ -e /etc/kubernetes/manifests ] || [ -e /var/lib/kubelet/config.yaml ]; }; then
` + kubeadmResetScript + `
fi
echo lap=files
for m in $(awk '$2 ~ "^/var/lib/kubelet" {print $2}' /proc/mounts | sort -r); do umount "$m" 2>/dev/null || umount -l "$m"; done
for p in /etc/kubernetes /var/lib/kubelet /var/lib/cni /var/lib/calico /var/run/calico /var/log/calico \
	/etc/k8slab/kubeadm-init.yaml /etc/k8slab/kubeadm-join.yaml /etc/k8slab/kubeadm-init.done /etc/k8slab/kubeadm-init-apiserver.done /etc/k8slab/kubeadm-patches /root/.kube/config; do
	[ -e "$p" ] && { rm -rf "$p"; gone "$p"; }
done
rm -f /var/log/k8slab/k8slab-kubeadm-*
` + cniConfRemoveScript + `
echo lap=links
for l in $(links); do
	case "$l" in cali*|vxlan.calico|vxlan-v6.calico|kube-ipvs0|tunl0) ip link delete "$l" 2>/dev/null && gone "link $l";; esac
done
` + ipipRemoveScript + `
echo lap=rules
for fam in ip ip6; do
	nft list table $fam kube-proxy >/dev/null 2>&1 && nft delete table $fam kube-proxy && gone "nft table $fam kube-proxy"
done
for t in $(nft list tables 2>/dev/null | awk '/calico/ {print $2 " " $3}' | tr ' ' ':'); do
	nft delete table $(echo "$t" | tr ':' ' ') && gone "nft table $t"
done
# Only kube-proxy's, the kubelet's and Calico's iptables chains and the
# rules that jump to them: the node's own rules stay.
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
# Calico's routes (protocol 80: BIRD's to other nodes' pod blocks, the
# blackhole for this node's own) outlive calico-node, and the next
# cluster's IPAM may give those blocks to other nodes: a stale blackhole
# would swallow their pods' traffic.
for fam in -4 -6; do
	if [ -n "$(ip $fam route show proto 80 2>/dev/null)" ]; then ip $fam route flush proto 80 && gone "ip $fam routes of Calico (protocol 80)"; fi
done
`

// kubeadmUnitsStopScript stops k8slab's detached kubeadm runs (transient
// units, gone once they end) in two or three systemctl calls: asking and
// resetting each unit apart took six, "units" 14.1 s of one run's
// reinstall on the loaded control-plane VM.
const kubeadmUnitsStopScript = `running=$(systemctl list-units --no-legend --plain --state=active,activating,deactivating \
	k8slab-kubeadm-init.service k8slab-kubeadm-init-rest.service k8slab-kubeadm-join.service 2>/dev/null | awk '{print $1}')
if [ -n "$running" ]; then
	systemctl stop $running
	for u in $running; do gone "running ${u%.service}"; done
fi
systemctl reset-failed 'k8slab-kubeadm-*' 2>/dev/null`

// kubeletStopScript kills the kubelet, then every process of every pod
// at once (kubepods.slice: the systemd cgroup driver's), before crictl
// tidies up: on the control plane the API server, controller-manager and
// scheduler kept the VM busy until their pods were stopped, and in the
// meantime the kubelet's graceful stop took 16 s and one crictl listing
// about 20 s (one run's reinstall: the first pod was stopped 40 s after
// the kubelet's stop began; killed first on the emulated lab, 2 s after it).
// Nothing in a reset needs either to end gracefully: their state is
// deleted next. The kubelet is killed first so it restarts no container,
// and stopped so systemd does not restart it.
const kubeletStopScript = `if systemctl is-active -q kubelet; then
	systemctl kill --signal=SIGKILL kubelet
	systemctl stop kubelet
	gone "kubelet running"
fi
systemctl kill --signal=SIGKILL kubepods.slice >/dev/null 2>&1`

// podRemoveScript removes every pod sandbox, one crictl per pod and all
// at once: crictl rmp -a stops them one after the other, which made
// "kubelet and pods" 1m30s of the emulated control plane's 2 min reset
// (one run's reinstall). A call that failed (xargs then exits non-zero)
// gets the serial pass; no second listing looks for what is left when
// all of them succeeded, because each crictl took seconds just to start
// on the emulated VMs (7 s from the kubelet's stop to the first
// StopPodSandbox on kube-node4), and with the kubelet stopped nothing
// starts a pod meanwhile.
const podRemoveScript = `pods=$(crictl pods -q 2>/dev/null)
if [ -n "$pods" ]; then
	printf '%s\n' $pods | xargs -n 1 -P 0 crictl --timeout 2m rmp -f >/dev/null 2>&1 ||
		crictl --timeout 2m rmp -fa >/dev/null 2>&1
	gone "pod sandboxes"
fi`

// ipipRemoveScript removes tunl0, the ipip module's fallback device,
// with the module. It never names tunl0 to the kernel while it may not
// exist: a lookup by name (`ip link show tunl0`) loads ipip through its
// netdev-tunl0 alias and so makes tunl0 — seen on a fresh node VM. That
// is why every earlier reset "removed" a tunl0 from nodes where
// calico-node never ran, and how a VM's reset once kept one: ipip went and something loaded it again within
// seconds, seen by hand once in ~70 load-and-remove tries; most likely
// udev, handling the new tunl0's event late, looked it up by name. So
// existence is read from the link list, udev may finish before and after
// the removal, and the list is read again. A module busy for a moment
// after the pods went is tried for up to 20 s; the last error goes with
// the "left" line.
const ipipRemoveScript = `ipiperr=
has_tunl0() { links | grep -qx tunl0; }
settle() { command -v udevadm >/dev/null 2>&1 && udevadm settle --timeout=10 >/dev/null 2>&1; }
if has_tunl0; then
	for i in 1 2 3 4 5 6 7 8 9 10; do
		settle
		if ipiperr=$(modprobe -r ipip 2>&1); then
			settle
			has_tunl0 || { ipiperr=; gone "link tunl0 (ipip module)"; break; }
			ipiperr="ipip loaded again after its removal"
		fi
		ipiperr=$(printf %s "$ipiperr" | tr '\n' ' ')
		sleep 2
	done
fi`

// kubeadmResetScript runs kubeadm reset. Finding no stacked etcd
// manifest, kubeadm reset deletes /var/lib/etcd anyway (its default data
// directory): on a member of k8slab's external etcd that is the member's
// data, before etcd-backup has read it and while etcd still runs — on the emulated lab
// kube-node1's etcd crash-looped on the data it lost ("member already
// bootstrapped"). Those nodes skip kubeadm's etcd phase;
// reset-etcd removes their etcd after the backup.
//
// kubeadm reset is pointed at no kubeconfig: with admin.conf it first
// reads kubeadm-config from the API server, which a reset that takes the
// whole cluster down has no use for (k8slab gives it the CRI socket, and
// the rest are kubeadm's defaults, as k8slab installs them) and which cost
// kube-node1 about a minute of a loaded API server on the emulated lab. The pods are
// gone before it runs: its own CRI calls wait 2 s and gave up on each
// sandbox a loaded containerd stopped more slowly (21 s of retries, run
// AF). K8SLAB_RESET_ROOT is unset on nodes; the test sets it to run the
// real kubeadm in a chroot.
const kubeadmResetScript = `	resetFlags="-f --kubeconfig /nonexistent/k8slab-reset-reads-no-cluster --cri-socket ` + bootstrap.CRISocket + `"
	[ -e "${K8SLAB_RESET_ROOT:-}/etc/systemd/system/etcd.service" ] && resetFlags="$resetFlags --skip-phases remove-etcd-member"
	kubeadm reset $resetFlags ${K8SLAB_RESET_ROOT:+--rootfs "$K8SLAB_RESET_ROOT"} >"${K8SLAB_RESET_ROOT:-}/var/log/k8slab-reset.log" 2>&1 && gone "kubeadm state" || echo "removed=kubeadm state (kubeadm reset failed: see /var/log/k8slab-reset.log)"`

// resetEtcdScript kills etcd rather than stopping it: its data is deleted
// next (etcd-backup has its snapshot), and a graceful stop only has a
// leader try to hand over to members that are stopping too. systemd is
// reloaded once: disable would reload it a first time, and each reload
// took seconds on the emulated VMs (reset-etcd was 21-28 s there).
const resetEtcdScript = `if [ -e /etc/systemd/system/etcd.service ] || [ -d /var/lib/etcd ] || [ -d /etc/etcd ]; then
	echo lap=etcd stop
	systemctl kill --signal=SIGKILL etcd >/dev/null 2>&1
	systemctl disable --now --no-reload etcd >/dev/null 2>&1
	echo lap=files
	rm -rf /etc/systemd/system/etcd.service /etc/etcd /var/lib/etcd
	echo lap=reload
	systemctl daemon-reload
	gone "etcd service and data"
fi
`

const resetAllScript = `if [ -e /etc/systemd/system/containerd.service ]; then
	systemctl disable --now kubelet containerd >/dev/null 2>&1
	for m in $(awk '$2 ~ "^/run/containerd|^/var/lib/containerd" {print $2}' /proc/mounts | sort -r); do umount -l "$m"; done
	rm -rf /etc/containerd /var/lib/containerd /run/containerd /etc/crictl.yaml /opt/cni \
		/etc/systemd/system/containerd.service /etc/systemd/system/kubelet.service /etc/systemd/system/kubelet.service.d \
		/usr/local/bin/kubeadm /usr/local/bin/kubelet /usr/local/bin/kubectl /usr/local/bin/etcd /usr/local/bin/etcdctl \
		/usr/local/bin/containerd /usr/local/bin/containerd-shim-runc-v2 /usr/local/bin/ctr /usr/local/bin/crictl /usr/local/sbin/runc \
		/etc/sysctl.d/99-k8slab.conf /etc/modules-load.d/k8slab.conf /etc/k8slab /var/lib/k8slab/files.state /var/log/k8slab
	systemctl daemon-reload
	gone "containerd, images, binaries, units and k8slab's OS settings files"
fi
`

// resetCheckScript reports anything Kubernetes or Calico still on the
// node: reset is only done when this prints nothing.
const resetCheckScript = `echo lap=check
for l in $(links); do
	case "$l" in cali*|vxlan.calico|vxlan-v6.calico|kube-ipvs0|tunl0) echo "left=link $l${ipiperr:+ (modprobe -r ipip: $ipiperr)}";; esac
done
nft list ruleset 2>/dev/null | grep -qE 'KUBE-|kube-proxy|cali' && echo "left=nft rules (KUBE-/kube-proxy/cali)"
for fam in -4 -6; do [ -z "$(ip $fam route show proto 80 2>/dev/null)" ] || echo "left=ip $fam routes of Calico (protocol 80)"; done
ipset list -n 2>/dev/null | grep -q '^cali' && echo "left=Calico's ipsets"
systemctl is-active -q kubelet && echo "left=kubelet running"
for p in /etc/kubernetes /var/lib/kubelet; do [ -e "$p" ] && echo "left=$p"; done
` + cniConfCheckScript

const resetEtcdCheckScript = `echo lap=check
systemctl is-active -q etcd && echo "left=etcd running"
[ -e /var/lib/etcd ] && echo "left=/var/lib/etcd"`

// containerd's CRI plugin watches /etc/cni/net.d and makes it again, empty,
// as soon as it is removed (seen on all four VMs): the CNI configuration in
// it is what reset removes and checks, the directory stays.
const (
	cniConfRemoveScript = `if [ -n "$(ls -A /etc/cni/net.d 2>/dev/null)" ]; then
	find /etc/cni/net.d -mindepth 1 -maxdepth 1 -exec rm -rf {} +
	gone "CNI configuration in /etc/cni/net.d"
fi`
	cniConfCheckScript = `for f in $(ls -A /etc/cni/net.d 2>/dev/null); do echo "left=/etc/cni/net.d/$f"; done`
)

// lapTimer keeps a script's output and notes when each "lap=NAME" line
// arrives: the time from one to the next is how long the part of the
// script between them took on the node (reset took minutes on emulated
// nodes, and which part did was not known).
type lapTimer struct {
	now     func() time.Time
	out     strings.Builder
	partial string
	name    string
	start   time.Time
	laps    []string
}

func (l *lapTimer) Write(b []byte) (int, error) {
	l.out.Write(b)
	l.partial += string(b)
	for {
		i := strings.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := l.partial[:i]
		l.partial = l.partial[i+1:]
		if name, ok := strings.CutPrefix(line, "lap="); ok {
			l.lap(name)
		}
	}
}

func (l *lapTimer) lap(next string) {
	at := l.now()
	if l.name != "" {
		l.laps = append(l.laps, fmt.Sprintf("%s %s", l.name, at.Sub(l.start).Round(100*time.Millisecond)))
	}
	l.name, l.start = next, at
}

// done closes the last lap and returns them all, in order.
func (l *lapTimer) done() []string {
	l.lap("")
	return l.laps
}
