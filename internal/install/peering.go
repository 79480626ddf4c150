package install

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/phase"
)

// Peering puts every node into its rack for Calico's AS-per-rack mode: the
// zone label the rack's BGPPeer selects and the rack's AS number, on the
// Node object. It runs once every node has joined (a Node exists only
// then, and it waits for a kubelet still registering its own);
// calico-node's BIRD picks both up without a restart. In mesh mode it has
// nothing to do.
type Peering struct {
	*Context
	Access *Access // from the control-plane phase
}

func (*Peering) Name() string { return "peering" }

// rackOf is the node's rack, from its subnet as preflight read it.
func (c *Context) rackOf(node string) (cluster.Rack, error) {
	subnet, err := netip.ParsePrefix(c.factsOf(node).DefaultAddr)
	if err != nil {
		return cluster.Rack{}, fmt.Errorf("%s: no address on its default route (%q) to find its rack by", node, c.factsOf(node).DefaultAddr)
	}
	return c.Cluster.RackOf(node, subnet)
}

// nodeLabels are the labels a node's kubelet registers it with: in
// as-per-rack mode its rack's zone label. Set at registration, not only by
// the peering phase: a zone label added later made kube-proxy (nftables
// mode) re-sync in full, after which its service map lacked the
// kubernetes Service (reproduced by removing and re-adding the label), and
// calico-node on that node could not reach the API server.
func (c *Context) nodeLabels(node string) map[string]string {
	if c.Cluster.Calico.BGP != cluster.BGPAsPerRack {
		return nil
	}
	r, err := c.rackOf(node)
	if err != nil {
		return nil
	}
	return map[string]string{calico.ZoneLabel: r.Name}
}

func (p *Peering) Plan() []phase.Step {
	if p.Cluster.Calico.BGP != cluster.BGPAsPerRack {
		return []phase.Step{{Action: "nothing (calico bgp mesh: nodes peer with each other)"}}
	}
	var steps []phase.Step
	for _, n := range p.Cluster.Nodes {
		r, err := p.rackOf(n)
		if err != nil {
			steps = append(steps, phase.Step{Node: n, Action: fmt.Sprintf("label %s=<its rack>, annotate %s=<its rack's AS> (racks are matched by subnet once preflight has run)", calico.ZoneLabel, calico.ASNAnnotation)})
			continue
		}
		steps = append(steps, phase.Step{Node: n, Action: fmt.Sprintf("label %s=%s, annotate %s=%d: iBGP with %s", calico.ZoneLabel, r.Name, calico.ASNAnnotation, r.ASN, r.Router)})
	}
	return steps
}

func (p *Peering) Run(ctx context.Context) error {
	if p.Cluster.Calico.BGP != cluster.BGPAsPerRack {
		return nil
	}
	cl, err := p.kubeClient(p.Access)
	if err != nil {
		return err
	}
	status := p.Runner.StatusWriter()
	for _, n := range p.Cluster.Nodes {
		r, err := p.rackOf(n)
		if err != nil {
			return err
		}
		name := p.Node(n).Facts.Hostname
		node, err := p.registered(ctx, cl.Kube, name)
		if err != nil {
			return fmt.Errorf("%s: reading Node %s: %w", n, name, err)
		}
		asn := fmt.Sprint(r.ASN)
		if node.Labels[calico.ZoneLabel] == r.Name && node.Annotations[calico.ASNAnnotation] == asn {
			continue
		}
		patch, _ := json.Marshal(calico.NodePatch(calico.Rack{Name: r.Name, Router: r.Router, ASN: r.ASN}))
		if _, err := cl.Kube.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("%s: labelling Node %s with its rack: %w", n, name, err)
		}
		fmt.Fprintf(status, "peering: %s in rack %s (AS%d): iBGP with %s\n", name, r.Name, r.ASN, r.Router)
	}
	return nil
}

// registered reads a Node, waiting (up to Wait) for one that does not
// exist yet: kubeadm join returns once the kubelet has its credentials,
// and the kubelet registers its Node a moment later (a container lab's
// peering phase, right after the joins, once found kube-node4 missing).
func (p *Peering) registered(ctx context.Context, kube kubernetes.Interface, name string) (*corev1.Node, error) {
	deadline := time.Now().Add(p.Wait)
	for {
		node, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			return node, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
