package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/kube"
	"github.com/k8slab/k8slab/internal/phase"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Calico applies the release manifest, patched for the cluster, and
// k8slab's own Calico resources, by server-side apply through the control
// plane's SSH connection. It runs before the workers join, as kubeadm's
// own guide orders it: the API server then serves the control plane only.
// Once workers have joined, their kubelets and pods take the host's CPU
// from the control plane: on emulated VMs each CRD took about a minute to
// apply after four joins, and applying during three joins made the joins
// 210-226 s instead of 125 s. The rollout phase waits for calico-node once
// every node is in.
type Calico struct {
	*Context
	Access *Access // from the control-plane phase
}

func (*Calico) Name() string { return "calico" }

func (c *Calico) options() calico.Options {
	return calico.Options{PodCIDR: c.Cluster.PodCIDR, BlockSize: c.Cluster.Calico.BlockSize,
		Encapsulation: c.Cluster.Calico.Encapsulation, Autodetect: c.Cluster.Calico.Autodetect, Racks: c.racks()}
}

// racks are the cluster's racks as Calico's resources take them (none in
// mesh mode).
func (c *Context) racks() []calico.Rack {
	if c.Cluster.Calico.BGP != cluster.BGPAsPerRack {
		return nil
	}
	var out []calico.Rack
	for _, r := range c.Cluster.Calico.Racks {
		out = append(out, calico.Rack{Name: r.Name, Router: r.Router, ASN: r.ASN})
	}
	return out
}

func (c *Calico) Plan() []phase.Step {
	ipip, vxlan, _ := c.options().Modes()
	bgp := "BGPConfiguration (server-side apply)"
	if racks := c.racks(); len(racks) > 0 {
		bgp = "BGPConfiguration without the node-to-node mesh, one BGPPeer per rack ("
		for i, r := range racks {
			if i > 0 {
				bgp += ", "
			}
			bgp += fmt.Sprintf("%s: %s AS%d", r.Name, r.Router, r.ASN)
		}
		bgp += ") (server-side apply)"
	}
	api := c.controlPlane().IP
	if api == "" {
		api = c.Cluster.ControlPlane + "'s node IP"
	}
	return []phase.Step{{Node: "", Action: fmt.Sprintf("calico %s: manifest with CALICO_IPV4POOL_CIDR=%s, IPIP %s, VXLAN %s, IP_AUTODETECTION_METHOD=%s; IPPool, FelixConfiguration, %s; ConfigMap %s (calico-node reaches the API server at %s:%d, not through kube-proxy); NetworkPolicy is enforced by Calico",
		c.Cluster.Calico.Version, c.Cluster.PodCIDR, ipip, vxlan, c.Cluster.Calico.Autodetect, bgp, calico.ServicesEndpointName, api, bootstrap.APIServerPort)}}
}

func (c *Calico) Run(ctx context.Context) error {
	if err := c.ensureArtifacts(ctx); err != nil {
		return err
	}
	objs, own, err := c.objects()
	if err != nil {
		return err
	}
	cl, err := c.kubeClient(c.Access)
	if err != nil {
		return err
	}
	status := c.Runner.StatusWriter()
	all := append(objs, own...)
	sum, err := objectsHash(all)
	if err != nil {
		return err
	}
	if c.appliedBefore(ctx, cl, sum) {
		fmt.Fprintf(status, "calico: nothing to do (the same %d objects were applied before)\n", len(all))
	} else {
		fmt.Fprintf(status, "calico: applying %d objects of the %s manifest and %d of k8slab's\n", len(objs), c.Cluster.Calico.Version, len(own))
		start := time.Now()
		err := cl.Apply(ctx, all, func(done, total int, o *unstructured.Unstructured, took time.Duration) {
			fmt.Fprintf(status, "calico: %d/%d applied: %s %s (%s, %s since the first)\n", done, total, o.GetKind(), o.GetName(),
				took.Round(100*time.Millisecond), time.Since(start).Round(time.Second))
		})
		if err != nil {
			return err
		}
		if err := c.recordApplied(ctx, cl, sum); err != nil {
			return err
		}
	}
	return nil
}

// objects are what the phase applies: the release manifest patched for
// the cluster, and k8slab's own resources.
func (c *Calico) objects() (manifest, own []*unstructured.Unstructured, err error) {
	b, err := os.ReadFile(filepath.Join(c.BundleDir, "calico", c.Cluster.Calico.Version, "calico.yaml"))
	if err != nil {
		return nil, nil, err
	}
	patched, err := calico.PatchManifest(b, c.options())
	if err != nil {
		return nil, nil, err
	}
	if manifest, err = kube.Objects(patched); err != nil {
		return nil, nil, err
	}
	typed, err := calico.Resources(c.options())
	if err != nil {
		return nil, nil, err
	}
	endpoint, err := calico.ServicesEndpoint(c.controlPlane().IP, bootstrap.APIServerPort)
	if err != nil {
		return nil, nil, err
	}
	own, err = kube.ToObjects(append(typed, endpoint))
	return manifest, own, err
}

// kubeClient reaches the API server as the cluster's admin, with what
// the control-plane phase handed on.
func (c *Context) kubeClient(a *Access) (*kube.Client, error) {
	return a.client(c.Hosts[c.Cluster.ControlPlane])
}

// appliedRecord remembers what the calico phase applied last, so that a
// re-run with nothing new skips re-applying some forty objects through a
// slow control plane.
const appliedRecord = "k8slab-calico"

func objectsHash(objs []*unstructured.Unstructured) (string, error) {
	h := sha256.New()
	for _, o := range objs {
		b, err := json.Marshal(o.Object)
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// appliedBefore: the record matches and calico-node still exists (a
// deleted DaemonSet is re-applied; deeper drift needs a reinstall).
func (c *Calico) appliedBefore(ctx context.Context, cl *kube.Client, sum string) bool {
	cm, err := cl.Kube.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, appliedRecord, metav1.GetOptions{})
	if err != nil || cm.Data["sha256"] != sum {
		return false
	}
	_, err = cl.Kube.AppsV1().DaemonSets(metav1.NamespaceSystem).Get(ctx, "calico-node", metav1.GetOptions{})
	return err == nil
}

func (c *Calico) recordApplied(ctx context.Context, cl *kube.Client, sum string) error {
	cm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": appliedRecord, "namespace": metav1.NamespaceSystem},
		"data":     map[string]any{"sha256": sum, "calico-version": c.Cluster.Calico.Version},
	}}
	return cl.Apply(ctx, []*unstructured.Unstructured{cm}, nil)
}
