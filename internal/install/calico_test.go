package install

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// calicoPhase is the calico phase of a one-node VXLAN cluster whose API
// server is a fake clientset holding objs, the release manifest read from
// testdata as from a bundle.
func calicoPhase(t *testing.T, objs ...runtime.Object) (*Calico, *fake.Clientset, *bytes.Buffer) {
	t.Helper()
	cfg := &cluster.Config{Nodes: []string{"kube-node1"}, PodCIDR: "172.31.128.0/18", ServiceCIDR: "172.31.64.0/18"}
	cfg.Calico.Encapsulation = "VXLAN"
	cfg.Default()
	var status bytes.Buffer
	r, err := run.New(run.Options{Command: "install", Status: &status}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &Context{Cluster: cfg, Bundle: &provision.Bundle{}, BundleDir: "../../testdata", Runner: r,
		Hosts: map[string]host.Host{"kube-node1": &hosttest.Fake{Label: "kube-node1"}}}
	c.setFacts("kube-node1", provision.Facts{Hostname: "kube-node1"}, "172.31.3.11")
	kc := fake.NewClientset(objs...)
	return &Calico{Context: c, Access: fakeAPIAccess(kc)}, kc, &status
}

// record is the calico phase's note of what it applied last.
func record(sum string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: appliedRecord, Namespace: metav1.NamespaceSystem},
		Data: map[string]string{"sha256": sum}}
}

var calicoNode = &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "calico-node", Namespace: metav1.NamespaceSystem}}

// sumOf is the hash of what the phase would apply now.
func sumOf(t *testing.T, c *Calico) string {
	t.Helper()
	m, own, err := c.objects()
	if err != nil {
		t.Fatal(err)
	}
	sum, err := objectsHash(append(m, own...))
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// A re-run with the same objects applies nothing: one read of the record
// and one of calico-node, no write.
func TestCalicoReRunAppliesNothing_SimulatedAPI(t *testing.T) {
	probe, _, _ := calicoPhase(t)
	c, kc, status := calicoPhase(t, record(sumOf(t, probe)), calicoNode)
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status.String(), "calico: nothing to do") {
		t.Errorf("status: %q", status.String())
	}
	for _, a := range kc.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("a re-run wrote to the API server: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
	if n := calls(kc, "get"); n != 2 {
		t.Errorf("%d reads, want 2 (the record, calico-node)", n)
	}
}

// What makes the phase apply again: other objects (a changed setting), or
// calico-node deleted since; and the objects carry the settings.
func TestCalicoAppliesAgainWhenSomethingChanged_SimulatedAPI(t *testing.T) {
	probe, _, _ := calicoPhase(t)
	sum := sumOf(t, probe)
	for _, tt := range []struct {
		name string
		objs []runtime.Object
		want bool
	}{
		{"the same objects, calico-node there", []runtime.Object{record(sum), calicoNode}, true},
		{"calico-node deleted", []runtime.Object{record(sum)}, false},
		{"other objects (a changed setting)", []runtime.Object{record("0" + sum[1:]), calicoNode}, false},
		{"never applied", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, _, _ := calicoPhase(t, tt.objs...)
			kcl, err := c.kubeClient(c.Access)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.appliedBefore(context.Background(), kcl, sum); got != tt.want {
				t.Errorf("applied before: %v, want %v", got, tt.want)
			}
		})
	}
	c, _, _ := calicoPhase(t)
	c.Cluster.Calico.Encapsulation = "IPIP"
	if sumOf(t, c) == sum {
		t.Error("IPIP and VXLAN clusters apply the same objects")
	}
	m, own, _ := c.objects()
	var text strings.Builder
	for _, o := range append(m, own...) {
		b, _ := o.MarshalJSON()
		text.Write(b)
	}
	for _, want := range []string{`"172.31.128.0/18"`, `"kubernetes-services-endpoint"`, `"KUBERNETES_SERVICE_HOST":"172.31.3.11"`} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the objects lack %s", want)
		}
	}
}
