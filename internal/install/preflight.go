package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
	nodescript "github.com/k8slab/k8slab/scripts/node"
)

// Preflight gathers facts on every node and checks them all before
// anything is changed: every problem on every node is reported at once.
type Preflight struct{ *Context }

func (*Preflight) Name() string { return "preflight" }

// Always: every other phase needs the facts, and preflight only reads.
func (*Preflight) Always() bool { return true }

type probe struct {
	facts provision.Facts
	// The node's clock minus the workstation's lies in [skewLow,
	// skewHigh]: its reading was taken after the request left and before
	// its line arrived here.
	skewLow, skewHigh time.Duration
	listen            map[int]string // port -> owner
	src               string
}

// supportedOS is what k8slab is tested on or known to work on.
func supportedOS() map[string][]string {
	return map[string][]string{"ubuntu": {"20.04", "22.04", "24.04"}, "debian": {"12"}}
}

func (p *Preflight) Run(ctx context.Context) error {
	cp := cluster.Address(p.Cluster.ControlPlane)
	probes := map[string]probe{}
	var mu sync.Mutex
	err := p.each(ctx, "preflight", p.Cluster.Nodes, nil, func(ctx context.Context, n Node, t *run.Task) error {
		pr, err := p.probe(ctx, t.Host, cp)
		if err != nil {
			return err
		}
		mu.Lock()
		probes[n.Name] = pr
		mu.Unlock()
		p.setFacts(n.Name, pr.facts, pr.src)
		t.Status("%s %s, %d CPUs, %d MiB, node-ip %s", pr.facts.OSID, pr.facts.OSVersion, pr.facts.CPUs, pr.facts.MemoryMB, pr.src)
		return nil
	})
	if err != nil {
		return err
	}
	// Every refusal is decided before --fix-machine-id changes a node: on
	// namespace-lab nodes it would rewrite the workstation's own machine-id.
	if problems := p.check(probes); len(problems) > 0 {
		return errors.New("preflight found problems, nothing was changed:\n  " + strings.Join(problems, "\n  "))
	}
	if err := p.compareRecord(ctx); err != nil {
		return err
	}
	if p.FixMachineID {
		return p.fixMachineIDs(ctx, probes)
	}
	return nil
}

// RecordMismatch: the cluster was installed with other settings; going on
// would half-apply them (kubeadm does not change an initialized cluster),
// so it takes --force.
type RecordMismatch struct {
	ControlPlane string
	Diff         []string
}

func (e *RecordMismatch) Error() string {
	return fmt.Sprintf("the cluster on %s was installed with other settings (%s):\n  %s\nnothing was changed; use the recorded settings, or --force to proceed anyway",
		e.ControlPlane, cluster.RecordPath, strings.Join(e.Diff, "\n  "))
}

func (p *Preflight) compareRecord(ctx context.Context) error {
	b, err := readFileIfExists(ctx, p.Hosts[p.Cluster.ControlPlane], cluster.RecordPath)
	if b == nil || err != nil {
		return err // nil: not installed yet (or recorded by nothing)
	}
	rec, err := cluster.Parse(b)
	if err != nil {
		return fmt.Errorf("host %s: %s: %w", p.Cluster.ControlPlane, cluster.RecordPath, err)
	}
	// A record written before a setting existed holds its default.
	rec.Default()
	if diff := p.Cluster.Diff(rec); len(diff) > 0 {
		if !p.Force {
			return &RecordMismatch{ControlPlane: p.Cluster.ControlPlane, Diff: diff}
		}
		fmt.Fprintf(p.Runner.StatusWriter(), "preflight: --force: proceeding although the recorded settings differ:\n  %s\n", strings.Join(diff, "\n  "))
	}
	return nil
}

func (p *Preflight) probe(ctx context.Context, h host.Host, cpHost string) (probe, error) {
	var pr probe
	// One round trip: facts and probe share a script. The clock is read
	// first; it was read between sending the request and its line's
	// arrival, which bounds the node's offset without guessing where in
	// between (the round trip's midpoint was off by 2.3 s with the facts
	// in the script, its arrival by 4 s on a loaded emulated node).
	var stdout, stderr bytes.Buffer
	first := &arrival{w: &stdout, now: p.Now}
	sent := p.Now()
	err := h.Run(ctx, host.Cmd{Command: `echo "now=$(date +%s.%N)"` + "\n" + provision.FactsScript() + nodescript.Subshell("preflight-probe.sh", cpHost) + "\n",
		Stdout: first, Stderr: &stderr})
	if err != nil {
		return pr, fmt.Errorf("preflight probe: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	out := stdout.String()
	f, err := provision.ParseFacts(out)
	if err != nil {
		return pr, err
	}
	pr.facts = f
	pr.listen = map[int]string{}
	vals := nodescript.Parse(out)
	secs, _ := strconv.ParseFloat(vals.Get("now"), 64)
	node := time.Unix(0, int64(secs*1e9))
	pr.skewLow, pr.skewHigh = node.Sub(first.at), node.Sub(sent)
	for _, v := range vals.All("listen") {
		addr, owner, _ := strings.Cut(v, " ")
		if _, port, err := net.SplitHostPort(addr); err == nil {
			n, _ := strconv.Atoi(port)
			pr.listen[n] = ownerName(owner)
		}
	}
	// "172.31.3.11 via 172.31.3.1 dev eth0 src 172.31.3.12 uid 0"
	route := strings.Fields(vals.Get("route"))
	for i := 0; i+1 < len(route); i++ {
		if route[i] == "src" {
			pr.src = route[i+1]
		}
	}
	if pr.src == "" && len(route) > 0 && route[0] == "local" {
		pr.src = cpHost // the control plane itself
	}
	if pr.src == "" {
		pr.src = strings.Split(f.DefaultAddr, "/")[0]
	}
	return pr, nil
}

// ownerName turns ss's users:(("etcd",pid=1,fd=3)) into "etcd".
func ownerName(s string) string {
	if i := strings.Index(s, `(("`); i >= 0 {
		rest := s[i+3:]
		if j := strings.IndexByte(rest, '"'); j >= 0 {
			return rest[:j]
		}
	}
	return "unknown"
}

// check applies the rules; it is separate from gathering so it is
// table-tested without machines.
func (p *Preflight) check(probes map[string]probe) []string {
	var problems []string
	bad := func(node, format string, args ...any) {
		problems = append(problems, node+": "+fmt.Sprintf(format, args...))
	}
	etcd := map[string]bool{}
	for _, e := range p.Cluster.Etcd {
		etcd[e] = true
	}
	workers := map[string]bool{}
	for _, w := range p.Cluster.Workers {
		workers[w] = true
	}
	seen := map[string]map[string]string{"hostname": {}, "machine-id": {}, "product_uuid": {}}
	var lows, highs []time.Duration
	for _, node := range p.Cluster.Nodes {
		pr, ok := probes[node]
		if !ok {
			continue
		}
		f := pr.facts
		if f.LabNode == "namespace" {
			bad(node, "a namespace-lab node shares this workstation's filesystem: installing would change the workstation itself (use container or VM nodes: k8slab lab up --containers, or --vms)")
		}
		if !slices.Contains(supportedOS()[f.OSID], f.OSVersion) {
			bad(node, "%s %s is not supported (Ubuntu 20.04-24.04, Debian 12)", f.OSID, f.OSVersion)
		}
		if p.Bundle != nil && f.Arch != "x86_64" {
			bad(node, "architecture %s: the offline bundle is built for x86_64", f.Arch)
		} else if f.Arch != "x86_64" && f.Arch != "aarch64" {
			bad(node, "architecture %s is not supported", f.Arch)
		}
		if f.CgroupVersion == 0 {
			bad(node, "no cgroup hierarchy at /sys/fs/cgroup")
		}
		if p.Cluster.Calico.Encapsulation == "IPIP" && !f.IPIP {
			bad(node, "Calico's IPIP encapsulation needs the ipip kernel module, which kernel %s does not have (use --calico-encapsulation VXLAN)", f.Kernel)
		}
		if p.Cluster.Calico.BGP == cluster.BGPAsPerRack {
			if subnet, err := netip.ParsePrefix(f.DefaultAddr); err != nil {
				bad(node, "no address on its default route (%q): as-per-rack peering finds a node's rack by its subnet", f.DefaultAddr)
			} else if _, err := p.Cluster.RackOf(node, subnet); err != nil {
				problems = append(problems, err.Error())
			}
		}
		if node == p.Cluster.ControlPlane {
			if f.CPUs < 2 {
				bad(node, "the control plane needs 2 CPUs, it has %d", f.CPUs)
			}
			if f.MemoryMB < 1700 {
				bad(node, "the control plane needs 1700 MiB of memory, it has %d", f.MemoryMB)
			}
		}
		want := map[int]string{10250: "kubelet"}
		if node == p.Cluster.ControlPlane {
			want[6443] = "kube-apiserver"
		}
		if etcd[node] {
			want[2379], want[2380] = "etcd", "etcd"
		}
		for port, ours := range want {
			// A port held by the component k8slab installs there is a
			// re-run, not a conflict.
			if owner, busy := pr.listen[port]; busy && owner != ours {
				bad(node, "port %d is in use by %s (%s needs it)", port, owner, ours)
			}
		}
		for kind, val := range map[string]string{"hostname": f.Hostname, "machine-id": f.MachineID, "product_uuid": f.ProductUUID} {
			// Namespace-lab nodes are the workstation itself (refused
			// above): their identities repeat by design, and no fix applies.
			if val == "" || f.LabNode == "namespace" {
				continue
			}
			if other, dup := seen[kind][val]; dup {
				switch {
				case kind == "machine-id" && p.FixMachineID:
					// Regenerated once nothing else is refused.
				case kind == "machine-id":
					bad(node, "%s %s is the same as %s's (cloned VMs: regenerate with --fix-machine-id)", kind, val, other)
				default:
					bad(node, "%s %s is the same as %s's", kind, val, other)
				}
			}
			seen[kind][val] = node
		}
		if pr.src == "" {
			bad(node, "no route to the control plane %s", p.Cluster.ControlPlane)
		}
		lows, highs = append(lows, pr.skewLow), append(highs, pr.skewHigh)
	}
	// Refuse only clocks that certainly differ: the node furthest ahead
	// is at least max(lows), the one furthest behind at most min(highs).
	if len(lows) > 1 {
		if spread := slices.Max(lows) - slices.Min(highs); spread > 2*time.Second {
			problems = append(problems, fmt.Sprintf("clocks differ by at least %s between nodes (at most 2s: certificates and etcd need agreeing clocks)", spread.Round(10*time.Millisecond)))
		}
	}
	sort.Strings(problems)
	return problems
}

// fixMachineIDs gives every node whose machine-id repeats an earlier
// node's a new one (cloned lab VMs share it, and the kubelet, Calico and
// journald key on it). Only with --fix-machine-id: it changes the node.
func (p *Preflight) fixMachineIDs(ctx context.Context, probes map[string]probe) error {
	seen := map[string]string{}
	for _, node := range p.Cluster.Nodes {
		pr, ok := probes[node]
		id := pr.facts.MachineID
		if !ok || id == "" {
			continue
		}
		if _, dup := seen[id]; !dup {
			seen[id] = node
			continue
		}
		out, err := host.Output(ctx, p.Hosts[node], nodescript.Script("machine-id.sh"))
		fresh := strings.TrimSpace(nodescript.Parse(out).Get("machine_id"))
		if err == nil && fresh == "" {
			err = fmt.Errorf("no machine_id in %q", out)
		}
		if err != nil {
			return fmt.Errorf("host %s: --fix-machine-id: %w", node, err)
		}
		pr.facts.MachineID = fresh
		probes[node] = pr
		p.setFacts(node, pr.facts, pr.src)
		fmt.Fprintf(p.Runner.StatusWriter(), "%s: machine-id %s was %s's too; regenerated: %s\n", node, id, seen[id], pr.facts.MachineID)
		seen[pr.facts.MachineID] = node
	}
	return nil
}

// arrival notes when the first output arrives.
type arrival struct {
	w   io.Writer
	now func() time.Time
	at  time.Time
}

func (a *arrival) Write(b []byte) (int, error) {
	if a.at.IsZero() {
		a.at = a.now()
	}
	return a.w.Write(b)
}
