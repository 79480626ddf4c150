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
	nodescript "github.com/k8slab/k8slab/scripts/node"
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
		acc.Endpoints = append(acc.Endpoints, "https://"+net.JoinHostPort(cluster.Address(e), "2379"))
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
	case r.part == resetEtcd && r.Node(node).EtcdMember:
		return []string{"etcd service, " + bootstrap.EtcdPKIDir + " and its data " + bootstrap.EtcdDataDir}
	case r.part == resetProvisioned:
		return []string{"containerd and every image, the Kubernetes/etcd/CNI binaries and units, k8slab's OS settings files, /etc/k8slab, /var/lib/k8slab"}
	}
	return nil
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
	part := [...]string{"kubernetes", "etcd", "provisioned"}[r.part]
	return r.each(ctx, r.Name(), r.nodes(), nil, func(ctx context.Context, _ Node, t *run.Task) error {
		laps := &lapTimer{now: time.Now}
		var stderr strings.Builder
		err := t.Host.Run(ctx, host.Cmd{Command: nodescript.Command("reset.sh", "-c", bootstrap.CRISocket, part), Stdout: laps, Stderr: &stderr})
		if err != nil {
			return fmt.Errorf("%s: %w: %s", r.Name(), err, strings.TrimSpace(stderr.String()))
		}
		if l := laps.done(); len(l) > 0 {
			t.Status("took: %s", strings.Join(l, ", "))
		}
		out := nodescript.Parse(laps.out.String())
		if left := out.All("left"); len(left) > 0 {
			return fmt.Errorf("%s left behind: %s", r.Name(), strings.Join(left, "; "))
		}
		if removed := out.All("removed"); len(removed) == 0 {
			t.Status("nothing to do")
		} else {
			t.Status("removed: %s", strings.Join(removed, ", "))
		}
		return nil
	})
}

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
