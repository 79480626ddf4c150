package calico

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// FieldManager owns the fields k8slab applies (server-side apply).
const FieldManager = "k8slab"

// Client talks to the API server through a tunnel: dial opens connections
// from the control plane (SSH), so the API server's port need not be
// reachable from the workstation.
type Client struct {
	dyn    dynamic.Interface
	kube   kubernetes.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

// NewClient builds clients from an admin kubeconfig.
func NewClient(kubeconfig []byte, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*Client, error) {
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("admin kubeconfig: %w", err)
	}
	cfg.Dial = dial
	cfg.Timeout = 60 * time.Second
	// Calico's CRDs use schema formats the API server does not know
	// ("cidr"); its warnings about that are noise on the user's terminal.
	cfg.WarningHandler = rest.NoWarnings{}
	cfg.QPS, cfg.Burst = 50, 100
	return newClient(cfg)
}

func newClient(cfg *rest.Config) (*Client, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{dyn: dyn, kube: kube, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))}, nil
}

// Objects decodes a multi-document manifest into objects.
func Objects(manifest []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, doc := range docSep.Split(string(manifest), -1) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

// ToObjects converts typed resources (Resources) to objects.
func ToObjects(typed []any) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, t := range typed {
		b, err := json.Marshal(t)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, err
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

// Apply server-side-applies objects in order: CRDs first, and the objects
// of a CRD's kinds only once the API server serves them.
func (c *Client) Apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	sort.SliceStable(objs, func(i, j int) bool {
		return objs[i].GetKind() == "CustomResourceDefinition" && objs[j].GetKind() != "CustomResourceDefinition"
	})
	for _, o := range objs {
		if err := c.applyOne(ctx, o); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) applyOne(ctx context.Context, o *unstructured.Unstructured) error {
	gvk := o.GroupVersionKind()
	var mapping *metaMapping
	for attempt := 0; ; attempt++ {
		m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err == nil {
			mapping = &metaMapping{m.Resource, m.Scope.Name() == "namespace"}
			break
		}
		// A CRD just applied is served a moment later.
		if attempt > 60 {
			return fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err)
		}
		c.mapper.Reset()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	data, err := json.Marshal(o.Object)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = c.dyn.Resource(mapping.resource)
	if mapping.namespaced {
		ns := o.GetNamespace()
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		ri = c.dyn.Resource(mapping.resource).Namespace(ns)
	}
	force := true
	_, err = ri.Patch(ctx, o.GetName(), "application/apply-patch+yaml", data, metav1.PatchOptions{FieldManager: FieldManager, Force: &force})
	if err != nil {
		return fmt.Errorf("apply %s %s: %w", gvk.Kind, o.GetName(), err)
	}
	return nil
}

type metaMapping struct {
	resource   schema.GroupVersionResource
	namespaced bool
}

// NodeReport is one node's Calico and readiness state.
type NodeReport struct {
	Node    string `json:"node"`
	Ready   bool   `json:"ready"`
	Calico  string `json:"calico"` // Running, or why not
	Problem string `json:"problem,omitempty"`
}

// Rollout reports calico-node per node and node readiness; done is true
// when every node is Ready with calico-node running.
func (c *Client) Rollout(ctx context.Context) (reports []NodeReport, desired int32, done bool, err error) {
	ds, err := c.kube.AppsV1().DaemonSets("kube-system").Get(ctx, "calico-node", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, 0, false, fmt.Errorf("DaemonSet kube-system/calico-node does not exist")
	}
	if err != nil {
		return nil, 0, false, err
	}
	nodes, err := c.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, 0, false, err
	}
	pods, err := c.kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=calico-node"})
	if err != nil {
		return nil, 0, false, err
	}
	byNode := map[string]string{}
	for _, p := range pods.Items {
		state := string(p.Status.Phase)
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "PodInitializing" {
				state = w.Reason + " " + cs.Image
				break
			}
		}
		byNode[p.Spec.NodeName] = state
	}
	done = true
	for _, n := range nodes.Items {
		r := NodeReport{Node: n.Name, Calico: byNode[n.Name]}
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" {
				r.Ready = cond.Status == "True"
				if !r.Ready {
					r.Problem = strings.TrimSpace(cond.Reason + ": " + cond.Message)
				}
			}
		}
		if r.Calico == "" {
			r.Calico = "no calico-node pod"
		}
		done = done && r.Ready && r.Calico == "Running"
		reports = append(reports, r)
	}
	sort.Slice(reports, func(i, j int) bool { return reports[i].Node < reports[j].Node })
	return reports, ds.Status.DesiredNumberScheduled, done, nil
}
