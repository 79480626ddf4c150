package install

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
)

func labProbes() map[string]probe {
	out := map[string]probe{}
	for i, n := range []string{"172.31.3.11", "172.31.3.12", "172.31.4.11", "172.31.4.12"} {
		out[n] = probe{
			facts: provision.Facts{Hostname: "kube-node" + string(rune('1'+i)), OSID: "debian", OSVersion: "12", Arch: "x86_64",
				CPUs: 2, MemoryMB: 1964, CgroupVersion: 2, MachineID: "mid" + n, ProductUUID: "uuid" + n, Kernel: "6.1.0-28-amd64", IPIP: true},
			listen: map[int]string{22: "sshd"},
			src:    n,
		}
	}
	return out
}

func TestPreflightChecks(t *testing.T) {
	tests := []struct {
		name   string
		change func(map[string]probe)
		want   []string // substrings; none means no problems
	}{
		{"the reference lab passes", func(map[string]probe) {}, nil},
		{"a re-run finds its own services on their ports", func(p map[string]probe) {
			cp := p["172.31.3.11"]
			cp.listen = map[int]string{6443: "kube-apiserver", 2379: "etcd", 2380: "etcd", 10250: "kubelet"}
			p["172.31.3.11"] = cp
		}, nil},
		{"a foreign process on an etcd port", func(p map[string]probe) {
			n := p["172.31.4.11"]
			n.listen = map[int]string{2379: "nginx"}
			p["172.31.4.11"] = n
		}, []string{"172.31.4.11: port 2379 is in use by nginx (etcd needs it)"}},
		{"cloned VMs", func(p map[string]probe) {
			n := p["172.31.4.12"]
			n.facts.MachineID = p["172.31.3.11"].facts.MachineID
			p["172.31.4.12"] = n
		}, []string{"172.31.4.12: machine-id mid172.31.3.11 is the same as 172.31.3.11's (cloned VMs: regenerate with --fix-machine-id)"}},
		{"namespace-lab nodes: refused, with no machine-id hint (they are the workstation)", func(p map[string]probe) {
			for n, pr := range p {
				pr.facts.LabNode, pr.facts.MachineID = "namespace", "workstation-id"
				p[n] = pr
			}
		}, []string{"172.31.3.11: a namespace-lab node shares this workstation's filesystem"}},
		{"a small control plane and an old OS", func(p map[string]probe) {
			cp := p["172.31.3.11"]
			cp.facts.CPUs, cp.facts.MemoryMB = 1, 1024
			p["172.31.3.11"] = cp
			w := p["172.31.3.12"]
			w.facts.OSID, w.facts.OSVersion = "ubuntu", "18.04"
			p["172.31.3.12"] = w
		}, []string{"172.31.3.11: the control plane needs 2 CPUs", "172.31.3.11: the control plane needs 1700 MiB", "172.31.3.12: ubuntu 18.04 is not supported"}},
		{"IPIP on a kernel without the ipip module (a container node's)", func(p map[string]probe) {
			n := p["172.31.4.11"]
			n.facts.IPIP, n.facts.Kernel = false, "6.18.44-fc"
			p["172.31.4.11"] = n
		}, []string{"172.31.4.11: Calico's IPIP encapsulation needs the ipip kernel module, which kernel 6.18.44-fc does not have (use --calico-encapsulation VXLAN)"}},
		{"a small worker is fine", func(p map[string]probe) {
			w := p["172.31.4.12"]
			w.facts.CPUs, w.facts.MemoryMB = 1, 900
			p["172.31.4.12"] = w
		}, nil},
		{"clock skew", func(p map[string]probe) {
			n := p["172.31.3.12"]
			n.skewLow, n.skewHigh = 3*time.Second, 3100*time.Millisecond // an exact reading: 3 s ahead
			p["172.31.3.12"] = n
		}, []string{"clocks differ by at least 3s"}},
		{"a slow answer is no skew: its reading may have been taken any time in the round trip", func(p map[string]probe) {
			n := p["172.31.3.12"]
			n.skewLow, n.skewHigh = -4*time.Second, 100*time.Millisecond
			p["172.31.3.12"] = n
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &cluster.Config{Nodes: []string{"172.31.3.11", "172.31.3.12", "172.31.4.11", "172.31.4.12"}}
			c.Default()
			p := &Preflight{&Context{Cluster: c, Bundle: &provision.Bundle{}}}
			probes := labProbes()
			tt.change(probes)
			got := p.check(probes)
			if len(tt.want) == 0 && len(got) > 0 {
				t.Fatalf("unexpected problems: %v", got)
			}
			all := strings.Join(got, "\n")
			if strings.Contains(tt.name, "namespace-lab") && strings.Contains(all, "machine-id") {
				t.Errorf("a machine-id problem on namespace-lab nodes:\n%s", all)
			}
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("problems lack %q:\n%s", w, all)
				}
			}
		})
	}
}

func TestOwnerName(t *testing.T) {
	for in, want := range map[string]string{`users:(("etcd",pid=812,fd=7))`: "etcd", `users:(("kube-apiserver",pid=1,fd=3),("x",pid=2,fd=1))`: "kube-apiserver", "": "unknown"} {
		if got := ownerName(in); got != want {
			t.Errorf("ownerName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPreflightRefusesBeforeFixingMachineIDs runs preflight's real probe
// on this machine as two namespace-lab nodes (they share its machine-id)
// with --fix-machine-id: the refusal comes first, and no command that
// changes a machine-id is ever sent. (A guard stands between preflight and
// this machine's shell and refuses such a command, so a regression fails
// the test without touching the workstation.)
func TestPreflightRefusesBeforeFixingMachineIDs(t *testing.T) {
	var hosts []host.Host
	nodes := []string{"172.31.3.11", "172.31.3.12"}
	guards := map[string]*machineIDGuard{}
	for _, n := range nodes {
		g := &machineIDGuard{Local: &hosttest.Local{Label: n, Env: []string{"K8SLAB_LAB_NODE=namespace"}}}
		guards[n] = g
		hosts = append(hosts, g)
	}
	r, err := run.New(run.Options{Command: "install"}, hosts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := &cluster.Config{Nodes: nodes}
	c.Default()
	ctx := &Context{Cluster: c, Runner: r, Hosts: map[string]host.Host{}, FixMachineID: true, Now: time.Now}
	for n, g := range guards {
		ctx.Hosts[n] = g
	}
	err = (&Preflight{ctx}).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "namespace-lab node shares this workstation's filesystem") {
		t.Fatalf("err = %v, want the namespace-lab refusal", err)
	}
	for n, g := range guards {
		if len(g.refused) > 0 {
			t.Errorf("%s: preflight sent a machine-id change: %q", n, g.refused)
		}
	}
}

// machineIDGuard runs commands on this machine, except those that would
// change its machine-id: it records and refuses them.
type machineIDGuard struct {
	*hosttest.Local
	refused []string
}

func (g *machineIDGuard) Run(ctx context.Context, c host.Cmd) error {
	if strings.Contains(c.Command, "machine-id-setup") || strings.Contains(c.Command, "rm -f /etc/machine-id") {
		g.refused = append(g.refused, c.Command)
		return errors.New("refused by the test: this would change the workstation's machine-id")
	}
	return g.Local.Run(ctx, c)
}
