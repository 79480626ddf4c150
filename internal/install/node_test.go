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
