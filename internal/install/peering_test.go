package install

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
	"github.com/k8slab/k8slab/provision"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// peeringPhase: the reference lab's four nodes (two per leaf) on a fake
// API server where each has registered.
func peeringPhase(t *testing.T, addrs map[string]string) (*Peering, *fake.Clientset) {
	t.Helper()
	kc := fake.NewClientset()
	cfg := &cluster.Config{ControlPlane: "kube-node1"}
	cfg.Calico.BGP = cluster.BGPAsPerRack
	cfg.Calico.Racks = []cluster.Rack{{Name: "leaf1", Router: "172.31.3.1", ASN: 65001}, {Name: "leaf2", Router: "172.31.4.1", ASN: 65002}}
	c := &Context{Cluster: cfg, Runner: quietRunner(t), Hosts: map[string]host.Host{"kube-node1": &hosttest.Fake{}}}
	for _, n := range []string{"kube-node1", "kube-node2", "kube-node3", "kube-node4"} {
		cfg.Nodes = append(cfg.Nodes, n)
		c.setFacts(n, provision.Facts{Hostname: n, DefaultAddr: addrs[n]}, "")
		kc.Tracker().Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	return &Peering{Context: c, Access: fakeAPIAccess(kc)}, kc
}

var referenceAddrs = map[string]string{"kube-node1": "172.31.3.11/24", "kube-node2": "172.31.3.12/24", "kube-node3": "172.31.4.11/24", "kube-node4": "172.31.4.12/24"}

func TestPeeringPutsEachNodeInItsRackOnce_SimulatedAPI(t *testing.T) {
	ctx := context.Background()
	p, kc := peeringPhase(t, referenceAddrs)
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{"kube-node1": {"leaf1", "65001"}, "kube-node2": {"leaf1", "65001"}, "kube-node3": {"leaf2", "65002"}, "kube-node4": {"leaf2", "65002"}}
	for n, w := range want {
		node, err := kc.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if node.Labels[calico.ZoneLabel] != w[0] || node.Annotations[calico.ASNAnnotation] != w[1] {
			t.Errorf("%s: zone %q AS %q, want %s AS%s", n, node.Labels[calico.ZoneLabel], node.Annotations[calico.ASNAnnotation], w[0], w[1])
		}
	}
	patches := func() int { return calls(kc, "patch") }
	if patches() != 4 {
		t.Errorf("%d patches, want 4", patches())
	}
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if patches() != 4 {
		t.Errorf("a re-run patched Nodes again (%d patches)", patches())
	}
}

// Preflight refuses such a node before anything changes; the phase run on
// its own (--only peering) still names it.
func TestPeeringNamesTheNodeWithoutARack_SimulatedAPI(t *testing.T) {
	addrs := map[string]string{}
	for n, a := range referenceAddrs {
		addrs[n] = a
	}
	addrs["kube-node4"] = "10.9.9.9/24"
	p, _ := peeringPhase(t, addrs)
	err := p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "kube-node4") || !strings.Contains(err.Error(), "no rack's router is on its subnet") {
		t.Fatalf("error %v, want one naming kube-node4 and why", err)
	}
}

func TestPeeringDoesNothingInMeshMode_SimulatedAPI(t *testing.T) {
	p, kc := peeringPhase(t, referenceAddrs)
	p.Cluster.Calico.BGP = cluster.BGPMesh
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(kc.Actions()); n != 0 {
		t.Errorf("mesh mode made %d API calls", n)
	}
}

// A Node the kubelet has not registered yet when the phase starts (kubeadm
// join returns before it) is waited for; one that never comes fails the
// phase within its wait, naming the node.
func TestPeeringWaitsForANodeToRegister_SimulatedAPI(t *testing.T) {
	ctx := context.Background()
	p, kc := peeringPhase(t, referenceAddrs)
	p.Wait = time.Minute
	if err := kc.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("nodes"), "", "kube-node4"); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(time.Second)
		kc.Tracker().Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kube-node4"}})
	}()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("kube-node4 registering a second late: %v", err)
	}
	if node, err := kc.CoreV1().Nodes().Get(ctx, "kube-node4", metav1.GetOptions{}); err != nil || node.Labels[calico.ZoneLabel] != "leaf2" {
		t.Errorf("kube-node4 after registering late: %v %v", node.Labels, err)
	}

	p, kc = peeringPhase(t, referenceAddrs)
	p.Wait = time.Second
	if err := kc.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("nodes"), "", "kube-node4"); err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); err == nil || !strings.Contains(err.Error(), "kube-node4") || !strings.Contains(err.Error(), "not found") {
		t.Errorf("kube-node4 never registering: %v", err)
	}
}
