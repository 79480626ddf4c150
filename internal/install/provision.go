package install

import (
	"context"
	"strings"

	"github.com/k8slab/k8slab/internal/phase"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
)

// Provision prepares every node in parallel: kernel settings, OS
// packages, containerd, the Kubernetes binaries and units, and the images
// the node's roles need. Each step skips what is already right.
type Provision struct{ *Context }

func (*Provision) Name() string { return "provision" }

func (p *Provision) roles(node string) (cp, etcd bool) {
	for _, e := range p.Cluster.Etcd {
		etcd = etcd || e == node
	}
	return node == p.Cluster.ControlPlane, etcd && !p.Cluster.StackedEtcd()
}

// Plan lists the steps per node.
func (p *Provision) Plan() []phase.Step {
	var steps []phase.Step
	for _, n := range p.Cluster.Nodes {
		cp, etcd := p.roles(n)
		add := func(a string) { steps = append(steps, phase.Step{Node: n, Action: a}) }
		add("swap off, modules overlay/br_netfilter, sysctls (persisted)")
		add("OS packages conntrack socat iptables nftables ebtables ethtool (apt, only if missing)")
		add("containerd " + p.Release.Containerd + ", runc " + p.Release.Runc + ", CNI plugins " + p.Release.CNIPlugins + ", crictl " + p.Release.Crictl + " (SystemdCgroup, sandbox pause:" + p.Release.Pause + ")")
		bins := "kubeadm, kubelet, kubectl " + p.Release.Kubernetes + " with kubelet unit and kubeadm drop-in"
		if etcd {
			bins += "; etcd, etcdctl " + p.Release.Etcd
		}
		add(bins)
		imgs := provision.ImagesFor(p.Release, cp, p.Cluster.StackedEtcd() && cp)
		if p.Bundle != nil {
			imgs = append(imgs, provision.BundledCalicoImages(p.Bundle, p.Cluster.Calico.Version)...)
		}
		add("import images: " + strings.Join(imgs, ", "))
	}
	return steps
}

func (p *Provision) Run(ctx context.Context) error {
	if err := p.ensureArtifacts(ctx); err != nil {
		return err
	}
	return p.each(ctx, "provision", p.Cluster.Nodes, nil, func(ctx context.Context, node string, t *run.Task) error {
		cp, etcd := p.roles(node)
		f := p.Facts(node)
		roles := provision.Roles{ControlPlane: cp, EtcdMember: etcd, StackedEtcd: cp && p.Cluster.StackedEtcd(), Calico: p.Cluster.Calico.Version,
			RestrictOOMScoreAdj: f.Kernel != "" && !f.SysResource}
		changed, err := provision.PrepareNode(ctx, t.Host, p.Bundle, p.BundleDir, roles, func(s string) { t.Status("%s", s) })
		if err != nil {
			return err
		}
		if len(changed) == 0 {
			t.Status("nothing to do")
		} else {
			t.Status("changed: %s", strings.Join(changed, ", "))
		}
		return nil
	})
}
