package install

import (
	"slices"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/provision"
)

// Node is one machine of the cluster as a phase sees it: the name the user
// gave it, its roles, and — once preflight has run — what preflight
// learned about it. Context.Node builds it from the cluster's lists and
// preflight's facts, so no phase derives a role or an address again.
type Node struct {
	// Name is the node as written in the cluster's nodes
	// ([user@]host[:port]): its key in Context.Hosts and in messages.
	Name string
	// Address is Name's host part: how the workstation reaches it.
	Address      string
	ControlPlane bool
	// EtcdMember: a member of k8slab's external etcd (a stacked etcd is
	// the control plane's, under kubeadm).
	EtcdMember bool
	Worker     bool
	// Facts are what preflight read on the node (zero before preflight:
	// `plan` runs none).
	Facts provision.Facts
	// IP is the node's address on its route to the control plane: the
	// kubelet's node-ip ("" before preflight).
	IP string
	// Labels are the ones the kubelet registers it with (its rack's zone
	// when Calico peers with the racks' routers).
	Labels map[string]string
}

// Node returns a node of the cluster by the name the user gave it.
func (c *Context) Node(name string) Node {
	stacked := c.Cluster.StackedEtcd()
	n := Node{
		Name:         name,
		Address:      cluster.Address(name),
		ControlPlane: name == c.Cluster.ControlPlane,
		EtcdMember:   !stacked && slices.Contains(c.Cluster.Etcd, name),
		Worker:       slices.Contains(c.Cluster.Workers, name),
		Labels:       c.nodeLabels(name),
	}
	c.mu.Lock()
	n.Facts, n.IP = c.facts[name], c.nodeIP[name]
	c.mu.Unlock()
	return n
}

// kubeadm is the node as kubeadm's init and join configurations name it.
func (n Node) kubeadm() bootstrap.Node {
	return bootstrap.Node{Name: n.Facts.Hostname, IP: n.IP, Labels: n.Labels}
}

// kubeadmIgnores are the kubeadm preflight checks the node skips: on
// cgroup v1, the one that refuses it (the kubelet is configured for v1
// then).
func (n Node) kubeadmIgnores() []string {
	if n.Facts.CgroupVersion == 1 {
		return []string{bootstrap.CgroupV1Preflight}
	}
	return nil
}
