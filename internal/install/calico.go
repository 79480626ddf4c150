package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/kube"
	"github.com/k8slab/k8slab/internal/phase"
)

// Calico applies the release manifest, patched for the cluster, and
// k8slab's own Calico resources, by server-side apply through the control
// plane's SSH connection; then it waits for calico-node on every node.
type Calico struct{ *Context }

func (*Calico) Name() string { return "calico" }

// RolloutIncomplete means everything was applied but calico-node or the
// nodes did not become ready in time; Nodes says why, per node.
type RolloutIncomplete struct {
	Nodes []calico.NodeReport
	Wait  time.Duration
}

func (e *RolloutIncomplete) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Calico did not become ready within %s:", e.Wait)
	for _, n := range e.Nodes {
		fmt.Fprintf(&b, "\n  %s: calico-node %s", n.Node, n.Calico)
		if !n.Ready {
			fmt.Fprintf(&b, "; node NotReady (%s)", n.Problem)
		}
	}
	return b.String()
}

func (c *Calico) options() calico.Options {
	return calico.Options{PodCIDR: c.Cluster.PodCIDR, BlockSize: c.Cluster.Calico.BlockSize,
		Encapsulation: c.Cluster.Calico.Encapsulation, Autodetect: c.Cluster.Calico.Autodetect}
}

func (c *Calico) Plan() []phase.Step {
	ipip, vxlan, _ := c.options().Modes()
	return []phase.Step{{Node: "", Action: fmt.Sprintf("calico %s: manifest with CALICO_IPV4POOL_CIDR=%s, IPIP %s, VXLAN %s, IP_AUTODETECTION_METHOD=%s; IPPool, FelixConfiguration, BGPConfiguration (server-side apply); NetworkPolicy is enforced by Calico",
		c.Cluster.Calico.Version, c.Cluster.PodCIDR, ipip, vxlan, c.Cluster.Calico.Autodetect)}}
}

func (c *Calico) Run(ctx context.Context) error {
	if c.Bundle == nil {
		return errNoBundle
	}
	manifest, err := os.ReadFile(filepath.Join(c.BundleDir, "calico", c.Cluster.Calico.Version, "calico.yaml"))
	if err != nil {
		return err
	}
	patched, err := calico.PatchManifest(manifest, c.options())
	if err != nil {
		return err
	}
	objs, err := kube.Objects(patched)
	if err != nil {
		return err
	}
	typed, err := calico.Resources(c.options())
	if err != nil {
		return err
	}
	own, err := kube.ToObjects(typed)
	if err != nil {
		return err
	}
	cl, err := c.kubeClient()
	if err != nil {
		return err
	}
	status := c.Runner.StatusWriter()
	fmt.Fprintf(status, "calico: applying %d objects of the %s manifest and %d of k8slab's\n", len(objs), c.Cluster.Calico.Version, len(own))
	if err := cl.Apply(ctx, append(objs, own...)); err != nil {
		return err
	}
	if !c.WaitRollout {
		reports, desired, _, err := calico.Rollout(ctx, cl.Kube)
		if err == nil {
			fmt.Fprintf(status, "calico: applied (not waiting): calico-node desired on %d nodes\n", desired)
			for _, r := range reports {
				fmt.Fprintf(status, "  %s: calico-node %s, ready %v\n", r.Node, r.Calico, r.Ready)
			}
		}
		return err
	}
	deadline := time.Now().Add(c.Wait)
	for {
		reports, desired, done, err := calico.Rollout(ctx, cl.Kube)
		if err == nil && done {
			fmt.Fprintf(status, "calico: calico-node running on all %d nodes, all nodes Ready; NetworkPolicy is enforced by Calico\n", desired)
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return &RolloutIncomplete{Nodes: reports, Wait: c.Wait}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

// kubeClient reaches the API server through the control plane's SSH
// connection, with the admin credentials the control-plane phase fetched.
func (c *Context) kubeClient() (*kube.Client, error) {
	c.mu.Lock()
	admin := c.adminConf
	c.mu.Unlock()
	if admin == nil {
		return nil, fmt.Errorf("no admin kubeconfig: the control-plane phase must run first (it is idempotent)")
	}
	d, ok := c.Hosts[c.Cluster.ControlPlane].(Dialer)
	if !ok {
		return nil, fmt.Errorf("the control plane's transport cannot tunnel connections")
	}
	return kube.NewClient(admin, d.DialContext)
}
