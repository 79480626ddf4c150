package install

import (
	"slices"
	"testing"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/provision"
)

// A node's roles come from the cluster's lists once, its facts and
// node-ip from preflight; kubeadm's view of it follows.
func TestNodeRolesAndFacts(t *testing.T) {
	cfg := &cluster.Config{Nodes: []string{"root@172.31.3.11:22", "172.31.3.12", "172.31.4.11", "172.31.4.12"}}
	cfg.Default()
	c := &Context{Cluster: cfg}
	c.setFacts("172.31.3.12", provision.Facts{Hostname: "kube-node2", CgroupVersion: 1}, "172.31.3.12")

	cp := c.Node("root@172.31.3.11:22")
	if !cp.ControlPlane || !cp.Worker || !cp.EtcdMember || cp.Address != "172.31.3.11" || cp.IP != "" {
		t.Errorf("control plane before preflight: %+v", cp)
	}
	n2 := c.Node("172.31.3.12")
	if n2.ControlPlane || !n2.EtcdMember || !n2.Worker || n2.kubeadm().Name != "kube-node2" || n2.kubeadm().IP != "172.31.3.12" {
		t.Errorf("kube-node2: %+v, kubeadm %+v", n2, n2.kubeadm())
	}
	if !slices.Equal(n2.kubeadmIgnores(), []string{"SystemVerification"}) || c.Node("172.31.4.11").kubeadmIgnores() != nil {
		t.Errorf("kubeadm's ignored checks: cgroup v1 %v, v2 %v", n2.kubeadmIgnores(), c.Node("172.31.4.11").kubeadmIgnores())
	}
	if n4 := c.Node("172.31.4.12"); n4.EtcdMember || !n4.Worker {
		t.Errorf("kube-node4 is a worker outside etcd: %+v", n4)
	}

	// A single etcd member is stacked: kubeadm's, no external member.
	one := &cluster.Config{Nodes: []string{"172.31.3.11"}}
	one.Default()
	if n := (&Context{Cluster: one}).Node("172.31.3.11"); n.EtcdMember || !n.ControlPlane {
		t.Errorf("stacked etcd: %+v", n)
	}
}

// An emulated node's daemons run on one Go thread: its containerd and
// kubelet (provisioning), its etcd member, and Calico's daemons in a
// cluster that has one; the other nodes keep Go's default.
func TestEmulatedNodeGoMaxProcs(t *testing.T) {
	cfg := &cluster.Config{Nodes: []string{"172.31.3.11", "172.31.3.12", "172.31.4.11", "172.31.4.12"}}
	cfg.Default()
	c := &Context{Cluster: cfg}
	for _, n := range cfg.Nodes {
		c.setFacts(n, provision.Facts{Hostname: n, Kernel: "6.1.0", SysResource: true, Virtualization: "kvm"}, n)
	}
	p, cal := &Provision{Context: c}, &Calico{Context: c}
	if r := p.roles(c.Node("172.31.3.12")); r.GoMaxProcs != 0 || cal.options().GoMaxProcs != 0 {
		t.Errorf("KVM nodes: roles %+v, Calico GOMAXPROCS %d", r, cal.options().GoMaxProcs)
	}
	c.setFacts("172.31.3.12", provision.Facts{Hostname: "172.31.3.12", Kernel: "6.1.0", SysResource: true, Virtualization: "qemu"}, "172.31.3.12")
	if r := p.roles(c.Node("172.31.3.12")); r.GoMaxProcs != 1 {
		t.Errorf("emulated node's roles: %+v", r)
	}
	if r := p.roles(c.Node("172.31.3.11")); r.GoMaxProcs != 0 {
		t.Errorf("KVM node's roles: %+v", r)
	}
	for _, m := range c.etcdMembers() {
		if want := map[bool]int{true: 1}[m.Name == "172.31.3.12"]; m.GoMaxProcs != want {
			t.Errorf("etcd member %s: GOMAXPROCS %d, want %d", m.Name, m.GoMaxProcs, want)
		}
	}
	if got := cal.options().GoMaxProcs; got != 1 {
		t.Errorf("Calico GOMAXPROCS %d with an emulated node, want 1", got)
	}
}
