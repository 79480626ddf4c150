package install

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
	"github.com/k8slab/k8slab/internal/kube"
	"github.com/k8slab/k8slab/provision"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

// kubeadm v1.37's Corefile, as read from a cluster it installed.
const kubeadmCorefile = `.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
`

func TestWithoutForward(t *testing.T) {
	got := WithoutForward(kubeadmCorefile)
	if strings.Contains(got, "forward") || strings.Contains(got, "max_concurrent") {
		t.Errorf("forward left in:\n%s", got)
	}
	for _, keep := range []string{"kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure", "cache 30 {\n       disable success cluster.local", "loop\n    reload\n    loadbalance\n}"} {
		if !strings.Contains(got, keep) {
			t.Errorf("lost %q:\n%s", keep, got)
		}
	}
	if got := WithoutForward("    forward . 8.8.8.8\n    cache 30\n"); got != "    cache 30\n" {
		t.Errorf("one-line forward: %q", got)
	}
	if WithoutForward(got) != got {
		t.Error("not idempotent")
	}
}

// dnsPhase is the dns phase on a fake API server holding kubeadm's
// CoreDNS ConfigMap; nameservers gives each node's count of resolvers.
func dnsPhase(t *testing.T, nameservers map[string]int) (*DNS, *fake.Clientset, *int) {
	t.Helper()
	kc := fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"},
		Data: map[string]string{"Corefile": kubeadmCorefile}}, kubeadmCoreDNS())
	c := &Context{Cluster: &cluster.Config{ControlPlane: "kube-node1"}, Runner: quietRunner(t), Hosts: map[string]host.Host{"kube-node1": &hosttest.Fake{}}}
	for n, ns := range nameservers {
		c.Cluster.Nodes = append(c.Cluster.Nodes, n)
		c.setFacts(n, provision.Facts{Kernel: "6.1.0", Nameservers: ns}, "")
	}
	a := fakeAPIAccess(kc)
	connects, connect := 0, a.connect
	a.connect = func(h host.Host, b []byte) (*kube.Client, error) { connects++; return connect(h, b) }
	return &DNS{Context: c, Access: a}, kc, &connects
}

// kubeadmCoreDNS is kubeadm v1.37's CoreDNS Deployment, its container's
// probes as read from a cluster it installed.
func kubeadmCoreDNS() *appsv1.Deployment {
	readiness := intstr.FromString("readiness-probe")
	liveness := intstr.FromString("liveness-probe")
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "coredns", Image: "registry.k8s.io/coredns/coredns:v1.14.6",
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: readiness, Scheme: "HTTP"}},
				PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3},
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: liveness, Scheme: "HTTP"}},
				InitialDelaySeconds: 60, PeriodSeconds: 10, TimeoutSeconds: 5, SuccessThreshold: 1, FailureThreshold: 5},
		}}}}}}
}

// coreDNSContainer is the coredns container of the fake API's Deployment.
func coreDNSContainer(t *testing.T, kc *fake.Clientset) corev1.Container {
	t.Helper()
	d, err := kc.AppsV1().Deployments("kube-system").Get(context.Background(), "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Spec.Containers[0]
}

func TestDNSPhaseGivesCoreDNSAStartupProbe_SimulatedAPI(t *testing.T) {
	ctx := context.Background()
	d, kc, _ := dnsPhase(t, map[string]int{"kube-node1": 1})
	if err := d.Run(ctx); err != nil {
		t.Fatal(err)
	}
	c := coreDNSContainer(t, kc)
	got, _ := json.Marshal(c.StartupProbe)
	if want := `{"httpGet":{"path":"/ready","port":"readiness-probe","scheme":"HTTP"},"timeoutSeconds":1,"periodSeconds":1,"successThreshold":1,"failureThreshold":1800}`; string(got) != want {
		t.Errorf("startupProbe\n got %s\nwant %s", got, want)
	}
	// kubeadm's own probes stay as they are.
	orig := kubeadmCoreDNS().Spec.Template.Spec.Containers[0]
	if !reflect.DeepEqual(c.ReadinessProbe, orig.ReadinessProbe) || !reflect.DeepEqual(c.LivenessProbe, orig.LivenessProbe) || c.Image != orig.Image {
		t.Errorf("kubeadm's container changed: %+v", c)
	}
	if n := calls(kc, "patch"); n != 1 {
		t.Errorf("%d patches, want 1", n)
	}
	if err := d.Run(ctx); err != nil { // a re-run changes nothing
		t.Fatal(err)
	}
	if n := calls(kc, "patch"); n != 1 {
		t.Errorf("the re-run patched CoreDNS again (%d patches)", n)
	}

	// A Deployment without its HTTP readiness probe is named, not guessed.
	d, kc, _ = dnsPhase(t, map[string]int{"kube-node1": 1})
	dep := kubeadmCoreDNS()
	dep.Spec.Template.Spec.Containers[0].ReadinessProbe = nil
	if _, err := kc.AppsV1().Deployments("kube-system").Update(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(ctx); err == nil || !strings.Contains(err.Error(), "no HTTP readiness probe") {
		t.Errorf("no readiness probe: %v", err)
	}
}

func corefile(t *testing.T, kc *fake.Clientset) string {
	cm, err := kc.CoreV1().ConfigMaps("kube-system").Get(context.Background(), "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data["Corefile"]
}

func TestDNSPhaseDropsForwardOnlyWhereANodeHasNoResolver_SimulatedAPI(t *testing.T) {
	ctx := context.Background()
	d, kc, _ := dnsPhase(t, map[string]int{"kube-node1": 1, "kube-node2": 2})
	if err := d.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if calls(kc, "update") != 0 || corefile(t, kc) != kubeadmCorefile {
		t.Errorf("every node has a resolver, yet the Corefile changed")
	}

	d, kc, _ = dnsPhase(t, map[string]int{"kube-node1": 1, "kube-node2": 0})
	if err := d.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := corefile(t, kc); got != WithoutForward(kubeadmCorefile) {
		t.Errorf("kube-node2 has no resolver, Corefile:\n%s", got)
	}
	updates := func() int { return calls(kc, "update") }
	if updates() != 1 {
		t.Errorf("%d updates, want 1", updates())
	}
	if err := d.Run(ctx); err != nil { // a re-run changes nothing
		t.Fatal(err)
	}
	if updates() != 1 {
		t.Errorf("the re-run updated the ConfigMap again (%d updates)", updates())
	}
}
