package install

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/host"
	nodescript "github.com/k8slab/k8slab/scripts/node"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// proxyWatch restarts a kube-proxy that has not programmed the cluster's
// own Service. On a container node kube-proxy (nftables mode) once made
// its two start-up syncs with no Service at all (after "Failed to list
// existing sets: netlink receive: no such file or directory") and, as
// that mode re-syncs only on a change or hourly, stayed idle with an
// empty service map: calico-node there could not reach the API server
// at the Service address and crash-looped until the install's wait ran
// out. A new kube-proxy programs every Service at once.
type proxyWatch struct {
	kube kubernetes.Interface
	// hosts reach each node by its Kubernetes name.
	hosts map[string]host.Host
	// svc is the kubernetes Service's address (the service CIDR's first).
	svc    netip.Addr
	mode   string // kube-proxy's: nftables or iptables
	status io.Writer
	// after is how long calico-node may be not ready before kube-proxy
	// is looked at (calico-node's own start takes tens of seconds).
	after time.Duration

	notReady  map[string]time.Time
	looked    map[string]time.Time
	restarted map[string]bool
}

func newProxyWatch(kube kubernetes.Interface, hosts map[string]host.Host, serviceCIDR, mode string, status io.Writer) *proxyWatch {
	p, _ := netip.ParsePrefix(serviceCIDR)
	return &proxyWatch{kube: kube, hosts: hosts, svc: p.Masked().Addr().Next(), mode: mode, status: status, after: time.Minute,
		notReady: map[string]time.Time{}, looked: map[string]time.Time{}, restarted: map[string]bool{}}
}

// look is called with every rollout reading: a node whose calico-node has
// been not ready for a while gets its kube-proxy checked (once a minute),
// and restarted once if it has not programmed the Service.
func (w *proxyWatch) look(ctx context.Context, st calico.Status) {
	now := time.Now()
	for _, n := range st.Nodes {
		if n.Calico == calico.CalicoReady {
			delete(w.notReady, n.Node)
			continue
		}
		since, ok := w.notReady[n.Node]
		if !ok {
			w.notReady[n.Node] = now
			continue
		}
		h, ok := w.hosts[n.Node]
		if !ok || w.restarted[n.Node] || now.Sub(since) < w.after || now.Sub(w.looked[n.Node]) < w.after {
			continue
		}
		w.looked[n.Node] = now
		out, err := host.Output(ctx, h, nodescript.Command("kube-proxy-programmed.sh", w.svc.String(), w.mode))
		if err != nil || nodescript.Parse(out).Get("service") != "missing" {
			continue
		}
		pods, err := w.kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-proxy", FieldSelector: "spec.nodeName=" + n.Node})
		if err != nil || len(pods.Items) == 0 {
			continue
		}
		for _, p := range pods.Items {
			if err := w.kube.CoreV1().Pods("kube-system").Delete(ctx, p.Name, metav1.DeleteOptions{}); err == nil {
				w.restarted[n.Node] = true
				fmt.Fprintf(w.status, "rollout: %s: kube-proxy has not programmed the kubernetes Service (%s:443) and calico-node cannot reach the API server: restarting kube-proxy (%s)\n", n.Node, w.svc, p.Name)
			}
		}
	}
}
