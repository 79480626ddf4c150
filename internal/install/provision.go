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

// roles are what provisioning installs a node for (plan and run alike).
func (p *Provision) roles(n Node) provision.Roles {
	return provision.Roles{ControlPlane: n.ControlPlane, EtcdMember: n.EtcdMember, StackedEtcd: n.ControlPlane && p.Cluster.StackedEtcd(),
		Calico: p.Cluster.Calico.Version, RestrictOOMScoreAdj: n.Facts.Kernel != "" && !n.Facts.SysResource}
}

// Plan lists the steps per node.
func (p *Provision) Plan() []phase.Step {
	var steps []phase.Step
	for _, name := range p.Cluster.Nodes {
		n := p.Node(name)
		add := func(a string) { steps = append(steps, phase.Step{Node: name, Action: a}) }
		add("swap off, modules overlay/br_netfilter, sysctls (persisted)")
		add("OS packages conntrack socat iptables nftables ebtables ethtool (apt, only if missing)")
		add("containerd " + p.Release.Containerd + ", runc " + p.Release.Runc + ", CNI plugins " + p.Release.CNIPlugins + ", crictl " + p.Release.Crictl + " (SystemdCgroup, sandbox pause:" + p.Release.Pause + ")")
		bins := "kubeadm, kubelet, kubectl " + p.Release.Kubernetes + " with kubelet unit and kubeadm drop-in"
		if n.EtcdMember {
			bins += "; etcd, etcdctl " + p.Release.Etcd
		}
		add(bins)
		if p.Bundle == nil || p.Bundle.Pull {
			add("images pulled by containerd when first used: " + strings.Join(provision.ImagesFor(p.Release, n.ControlPlane, p.Cluster.StackedEtcd() && n.ControlPlane), ", "))
		} else {
			add("import images: " + strings.Join(provision.NodeImages(p.Bundle, p.roles(n)), ", "))
		}
	}
	return steps
}

func (p *Provision) Run(ctx context.Context) error {
	if err := p.ensureArtifacts(ctx); err != nil {
		return err
	}
	return p.each(ctx, "provision", p.Cluster.Nodes, nil, func(ctx context.Context, n Node, t *run.Task) error {
		changed, err := provision.PrepareNode(ctx, t.Host, p.Bundle, p.BundleDir, p.roles(n), func(s string) { t.Status("%s", s) })
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
