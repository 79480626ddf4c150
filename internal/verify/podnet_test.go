package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/provision"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// simNetwork stands in for the kubelet, the pod network and Calico's
// policy enforcement: it runs no container and sends no packet. It
// answers verify's test pods by their arguments, so these tests prove the
// checks' logic (pod specs, placement, verdicts, reasons, cleanup), not
// that a real cluster's network works.
type simNetwork struct {
	dns, podNet, svcNet, enforcePolicy bool
	ignoreEgress                       bool
	serverStuck                        bool
	stuckReason, stuckMessage          string // ContainerCreating if empty
}

func (s simNetwork) run(ctx context.Context, t *testing.T, kc *fake.Clientset) {
	for ctx.Err() == nil {
		pods, _ := kc.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		for _, p := range pods.Items {
			if p.Status.Phase != "" {
				continue
			}
			s.answer(ctx, t, kc, p)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s simNetwork) answer(ctx context.Context, t *testing.T, kc *fake.Clientset, p corev1.Pod) {
	c := p.Spec.Containers[0]
	if c.Image != provision.ProbeImage || c.ImagePullPolicy != corev1.PullNever || p.Spec.NodeName == "" {
		t.Errorf("test pod %s: image %s, pull %s, node %q", p.Name, c.Image, c.ImagePullPolicy, p.Spec.NodeName)
	}
	if p.Name == "server" {
		if s.serverStuck {
			w := &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
			if s.stuckReason != "" {
				w.Reason, w.Message = s.stuckReason, s.stuckMessage
			}
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: w}}}
			p.Status.Phase = corev1.PodPending
		} else {
			p.Status.Phase, p.Status.PodIP = corev1.PodRunning, "172.31.128.7"
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Ready: true}}
		}
		kc.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, &p, metav1.UpdateOptions{})
		return
	}
	args := c.Args
	if !slices.Equal(args[1:3], []string{"-message", "/dev/termination-log"}) {
		t.Errorf("test pod %s: %q does not report its reason", p.Name, args)
	}
	target := args[len(args)-1]
	ok, msg := false, ""
	switch args[0] {
	case "resolve":
		ok = s.dns
		msg = map[bool]string{true: target + " resolves to 172.31.64.1", false: target + ": lookup timed out"}[ok]
	case "get":
		policies, _ := kc.NetworkingV1().NetworkPolicies(p.Namespace).List(ctx, metav1.ListOptions{})
		reach := s.podNet
		if strings.Contains(target, "172.31.64.") {
			reach = s.svcNet
		}
		names := map[string]bool{}
		for _, np := range policies.Items {
			names[np.Name] = true
		}
		if s.enforcePolicy && names["default-deny"] && !names["allow-client"] {
			reach = false
		}
		// Under default-deny alone every client is blocked, so any other
		// check's verdict would prove nothing.
		if names["default-deny"] && !names["allow-client"] && p.Name != "policy-deny" {
			t.Errorf("test pod %s started while default-deny alone is in place", p.Name)
		}
		if s.enforcePolicy && !s.ignoreEgress && p.Labels[egressLabel] == "dns-only" {
			reach = false
		}
		want := "reachable"
		if i := slices.Index(args, "-want"); i > 0 {
			want = args[i+1]
		}
		ok = reach == (want == "reachable")
		msg = map[bool]string{true: target + " answered: k8slab-probe server", false: target + " unreachable: i/o timeout"}[reach]
	}
	p.Status.Phase = map[bool]corev1.PodPhase{true: corev1.PodSucceeded, false: corev1.PodFailed}[ok]
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Message: msg}}}}
	kc.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, &p, metav1.UpdateOptions{})
}

// fakeAPI is a clientset that assigns what the API server would: generated
// names and ClusterIPs.
func fakeAPI() *fake.Clientset {
	kc := fake.NewClientset()
	n := 0
	kc.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj := a.(k8stesting.CreateAction).GetObject()
		if m, ok := obj.(metav1.Object); ok && m.GetName() == "" {
			n++
			m.SetName(fmt.Sprintf("%s%05d", m.GetGenerateName(), n))
		}
		if svc, ok := obj.(*corev1.Service); ok {
			svc.Spec.ClusterIP = "172.31.64.10"
		}
		return false, nil, nil
	})
	return kc
}

func withProbe(nodes []corev1.Node) []corev1.Node {
	for i := range nodes {
		nodes[i].Status.Images = []corev1.ContainerImage{{Names: []string{"k8slab.dev/k8slab-probe@sha256:0123", provision.ProbeImage}}}
	}
	return nodes
}

func TestPodNetworkChecksSimulatedKubelet(t *testing.T) {
	healthy := simNetwork{dns: true, podNet: true, svcNet: true, enforcePolicy: true}
	noPolicy, noDNS, noSvc, stuck, noEgress := healthy, healthy, healthy, healthy, healthy
	noPolicy.enforcePolicy = false
	noEgress.ignoreEgress = true
	noDNS.dns = false
	noSvc.svcNet = false
	stuck.serverStuck = true
	// The kubelet gives a message with this reason: it must not hide the
	// reason from the check that gives up at once.
	neverPull := stuck
	neverPull.stuckReason, neverPull.stuckMessage = "ErrImageNeverPull", `Container image "`+provision.ProbeImage+`" is not present with pull policy of Never`
	ready := func() []corev1.Node { return withProbe(labNodes(corev1.ConditionTrue, "")) }
	readyOf := func(names ...string) []corev1.Node {
		return slices.DeleteFunc(ready(), func(n corev1.Node) bool { return !slices.Contains(names, n.Name) })
	}
	cases := []struct {
		name       string
		sim        simNetwork
		nodes      []corev1.Node
		calicoDown string
		want       []Status // DNS, pod-to-pod, in-rack, ClusterIP, policy, egress
		reason     string   // in every non-PASS reason
	}{
		{"healthy network", healthy, ready(), "", []Status{Pass, Pass, Pass, Pass, Pass, Pass}, ""},
		// A pass between two nodes of one rack is no proof of the path
		// across racks, nor the reverse.
		{"one rack: across racks SKIP", healthy, readyOf("kube-node1", "kube-node2"), "", []Status{Pass, Skip, Pass, Pass, Pass, Pass}, "every schedulable Ready node with the test image is in kube-node1's rack (172.31.3.0/24)"},
		{"one node per rack: within a rack SKIP", healthy, readyOf("kube-node1", "kube-node3"), "", []Status{Pass, Pass, Skip, Pass, Pass, Pass}, "no other schedulable Ready node with the test image in kube-node1's rack (172.31.3.0/24)"},
		{"alone in its rack, two in the other: within a rack SKIP", healthy, readyOf("kube-node1", "kube-node3", "kube-node4"), "", []Status{Pass, Pass, Skip, Pass, Pass, Pass}, "no other schedulable Ready node with the test image in kube-node1's rack (172.31.3.0/24)"},
		{"offline lab: Calico down is SKIP", healthy, ready(), "calico-node not running: ErrImagePull quay.io/calico/node:v3.32.1 on kube-node3", []Status{Skip, Skip, Skip, Skip, Skip, Skip}, "quay.io/calico/node:v3.32.1"},
		{"no probe image on the nodes", healthy, labNodes(corev1.ConditionTrue, ""), "", []Status{Skip, Skip, Skip, Skip, Skip, Skip}, "not on kube-node1, kube-node2, kube-node3, kube-node4"},
		{"policy not enforced", noPolicy, ready(), "", []Status{Pass, Pass, Pass, Pass, Fail, Fail}, "did not block"},
		{"egress policy not enforced", noEgress, ready(), "", []Status{Pass, Pass, Pass, Pass, Pass, Fail}, "the egress policy did not block the pod"},
		{"DNS broken", noDNS, ready(), "", []Status{Fail, Pass, Pass, Pass, Pass, Fail}, "lookup timed out"},
		{"Services broken", noSvc, ready(), "", []Status{Pass, Pass, Pass, Fail, Pass, Pass}, "172.31.64.10/ unreachable"},
		{"server never starts", stuck, ready(), "", []Status{Fail, Fail, Fail, Fail, Fail, Fail}, "test server pod on kube-node1: still ContainerCreating"},
		{"probe image missing although the node listed it", neverPull, ready(), "", []Status{Fail, Fail, Fail, Fail, Fail, Fail}, "ErrImageNeverPull: " + provision.ProbeImage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kc := fakeAPI()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go c.sim.run(ctx, t, kc)
			// 300 ms was too short for the simulated kubelet beside an
			// emulated VM install (a pod still Pending); 2 s only slows the
			// cases that wait it out.
			checks := podNetwork(ctx, kc, c.nodes, c.calicoDown, 2*time.Second)
			if len(checks) != len(podNetworkChecks) {
				t.Fatalf("%d checks: %+v", len(checks), checks)
			}
			for i, ch := range checks {
				if ch.Name != podNetworkChecks[i] || ch.Status != c.want[i] || (ch.Status != Pass && !strings.Contains(ch.Reason, c.reason)) {
					t.Errorf("%s: %s %q; want %s with %q", ch.Name, ch.Status, ch.Reason, c.want[i], c.reason)
				}
			}
			if c.want[1] == Pass && !strings.HasPrefix(checks[1].Reason, "kube-node3 (172.31.4.11) → kube-node1 (172.31.3.11, pod 172.31.128.7)") {
				t.Errorf("pod-to-pod is not across racks: %s", checks[1].Reason)
			}
			if c.want[2] == Pass && !strings.HasPrefix(checks[2].Reason, "kube-node2 (172.31.3.12) → kube-node1 (172.31.3.11, pod 172.31.128.7)") {
				t.Errorf("in-rack pod-to-pod is not within kube-node1's rack: %s", checks[2].Reason)
			}
			// The ClusterIP is asked from the other rack, or from the
			// server's own when there is no other.
			from := "kube-node3 (172.31.4.11)"
			if c.want[1] == Skip && c.want[2] == Pass {
				from = "kube-node2 (172.31.3.12)"
			}
			if c.want[3] == Pass && !strings.HasPrefix(checks[3].Reason, from+" → kube-node1") {
				t.Errorf("ClusterIP not asked from %s: %s", from, checks[3].Reason)
			}
			if nss, _ := kc.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); len(nss.Items) != 0 {
				t.Errorf("test namespace left behind: %v", nss.Items[0].Name)
			}
		})
	}
}

// A namespace a killed verify left behind is removed by the next one;
// a recent one (a verify still running) and the user's are kept.
func TestPodNetworkRemovesLeftovers(t *testing.T) {
	kc := fakeAPI()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "k8slab-verify-old", Labels: map[string]string{verifyLabel: "true"}}}, metav1.CreateOptions{})
	kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "users-own"}}, metav1.CreateOptions{})
	// Another verify's, still running: kept.
	kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "k8slab-verify-running", Labels: map[string]string{verifyLabel: "true"}, CreationTimestamp: metav1.Now()}}, metav1.CreateOptions{})
	go simNetwork{dns: true, podNet: true, svcNet: true, enforcePolicy: true}.run(ctx, t, kc)
	podNetwork(ctx, kc, withProbe(labNodes(corev1.ConditionTrue, "")), "", time.Second)
	nss, _ := kc.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	var names []string
	for _, ns := range nss.Items {
		names = append(names, ns.Name)
	}
	if !slices.Equal(names, []string{"k8slab-verify-running", "users-own"}) {
		t.Errorf("namespaces after verify: %v", nss.Items)
	}
}
