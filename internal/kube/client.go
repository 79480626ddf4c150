// Package kube is k8slab's Kubernetes API client: reached through the
// control plane's SSH connection, used to apply objects (server-side
// apply) and to read the cluster's state.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
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
	Dyn    dynamic.Interface
	Kube   kubernetes.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper

	refreshMu sync.Mutex
	refreshed time.Time
	// poll is the pause between looks for a kind not yet served, for at
	// most servedWithin: seconds after its CRD on a quiet API server,
	// minutes on a saturated one.
	poll, servedWithin time.Duration
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
	return &Client{Dyn: dyn, Kube: kube, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc)), poll: 2 * time.Second, servedWithin: 10 * time.Minute}, nil
}

// Objects decodes a multi-document manifest into objects.
func Objects(manifest []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, doc := range SplitDocs(string(manifest)) {
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

// Applied is told about each object Apply has applied, and how long that
// took: on a saturated control plane CRDs took about a minute each, and a
// phase that says nothing for twenty minutes cannot be told from a hung one.
type Applied func(done, total int, o *unstructured.Unstructured, took time.Duration)

// applyParallel bounds the requests in flight: a few at once overlap the
// round trips (SSH tunnel, API server, etcd) without piling up requests
// on a loaded API server until they time out.
const applyParallel = 4

// Apply server-side-applies objects in two waves: CRDs and Namespaces
// first, then everything else once the API server serves the kinds it
// needs. Within a wave the objects do not depend on each other.
func (c *Client) Apply(ctx context.Context, objs []*unstructured.Unstructured, report Applied) error {
	var first, rest []*unstructured.Unstructured
	for _, o := range objs {
		if k := o.GetKind(); k == "CustomResourceDefinition" || k == "Namespace" {
			first = append(first, o)
		} else {
			rest = append(rest, o)
		}
	}
	done, total := 0, len(objs)
	var mu sync.Mutex
	wave := func(objs []*unstructured.Unstructured) error {
		g, ctx := errgroup.WithContext(ctx)
		g.SetLimit(applyParallel)
		for _, o := range objs {
			g.Go(func() error {
				start := time.Now()
				if err := c.applyOne(ctx, o); err != nil {
					return err
				}
				if report != nil {
					mu.Lock()
					done++
					report(done, total, o, time.Since(start))
					mu.Unlock()
				}
				return nil
			})
		}
		return g.Wait()
	}
	if err := wave(first); err != nil {
		return err
	}
	return wave(rest)
}

func (c *Client) applyOne(ctx context.Context, o *unstructured.Unstructured) error {
	gvk := o.GroupVersionKind()
	var mapping *metaMapping
	for start := time.Now(); ; {
		m, err := c.mapping(gvk)
		if err == nil {
			mapping = m
			break
		}
		if time.Since(start) > c.servedWithin {
			return fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.poll):
		}
	}
	data, err := json.Marshal(o.Object)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = c.Dyn.Resource(mapping.resource)
	if mapping.namespaced {
		ns := o.GetNamespace()
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		ri = c.Dyn.Resource(mapping.resource).Namespace(ns)
	}
	force := true
	err = RetryTransient(ctx, 10*time.Minute, 2*time.Second, func() error {
		_, err := ri.Patch(ctx, o.GetName(), "application/apply-patch+yaml", data, metav1.PatchOptions{FieldManager: FieldManager, Force: &force})
		return err
	})
	if err != nil {
		return fmt.Errorf("apply %s %s: %w", gvk.Kind, o.GetName(), err)
	}
	return nil
}

// RetryTransient calls fn again, with a pause doubling from first up to
// 30 s, while it fails in a way that says "not now" rather than "no" and
// budget lasts. Server-side apply is idempotent, so a request that timed
// out on the server and may have been applied is safe to send again. A
// loaded emulated control plane answered a CRD's apply with its own 60 s
// timeout after four nodes had joined, and the install failed on it.
func RetryTransient(ctx context.Context, budget, first time.Duration, fn func() error) error {
	start, pause := time.Now(), first
	for {
		err := fn()
		if err == nil || !transient(err) || time.Since(start)+pause > budget {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = min(2*pause, 30*time.Second)
	}
}

// transient: the API server (or the way to it) was overloaded or away.
func transient(err error) bool {
	if apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	s := strings.ToLower(err.Error())
	for _, m := range []string{"connection refused", "connection reset", "tls handshake timeout", "eof", "http2: client connection lost"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// mapping asks the cached discovery; a kind it does not know makes it
// refresh once, shared by every goroutine that is waiting for a CRD.
func (c *Client) mapping(gvk schema.GroupVersionKind) (*metaMapping, error) {
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		c.refresh()
		if m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return nil, err
		}
	}
	return &metaMapping{m.Resource, m.Scope.Name() == "namespace"}, nil
}

// refresh drops the discovery cache at most twice per poll, however many
// objects wait for their kinds: each refresh costs the API server a full
// discovery.
func (c *Client) refresh() {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	if time.Since(c.refreshed) < c.poll/2 {
		return
	}
	c.mapper.Reset()
	c.refreshed = time.Now()
}

type metaMapping struct {
	resource   schema.GroupVersionResource
	namespaced bool
}

// Readyz asks the API server's /readyz.
func (c *Client) Readyz(ctx context.Context) error {
	body, err := c.Kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err == nil {
		return nil
	}
	if failing := failingChecks(string(body)); len(failing) > 0 {
		return fmt.Errorf("not ready: %s", strings.Join(failing, ", "))
	}
	return err
}

// failingChecks are the checks a /readyz or /livez answer marks "[-]". The
// whole answer lists some forty checks, and an install waiting minutes
// for one of them printed all forty every 3 s.
func failingChecks(body string) []string {
	var out []string
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "[-]"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				out = append(out, f[0])
			}
		}
	}
	return out
}

// SplitDocs splits a multi-document YAML stream at its "---" lines.
func SplitDocs(s string) []string {
	var docs []string
	start := 0
	for i := 0; i <= len(s); {
		end := strings.IndexByte(s[i:], '\n')
		if end < 0 {
			end = len(s) - i
		}
		line := strings.TrimRight(s[i:i+end], " \t")
		if line == "---" {
			docs = append(docs, s[start:i])
			start = i + end + 1
		}
		i += end + 1
	}
	if start <= len(s) {
		docs = append(docs, s[start:])
	}
	return docs
}

// CreateBootstrapToken stores a kubeadm-style bootstrap token ("id.secret")
// as kubeadm's own `token create` does: a Secret the API server accepts for
// node bootstrap. Creating it through the API costs one request, where
// running kubeadm on an emulated control plane costs seconds.
func (c *Client) CreateBootstrapToken(ctx context.Context, token string, ttl time.Duration) error {
	id, secret, ok := strings.Cut(token, ".")
	if !ok {
		return fmt.Errorf("bootstrap token: want id.secret")
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: metav1.NamespaceSystem},
		Type:       corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{
			"token-id":                       id,
			"token-secret":                   secret,
			"expiration":                     time.Now().Add(ttl).UTC().Format(time.RFC3339),
			"usage-bootstrap-authentication": "true",
			"usage-bootstrap-signing":        "true",
			"auth-extra-groups":              "system:bootstrappers:kubeadm:default-node-token",
			"description":                    "k8slab join",
		},
	}
	if _, err := c.Kube.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bootstrap token: %w", err)
	}
	return nil
}
