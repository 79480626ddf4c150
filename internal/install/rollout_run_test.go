package install

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
)

// rolloutPhase is the rollout phase of a two-node cluster whose API
// server (a fake clientset) holds calico-node on both nodes, Ready on
// kube-node1 and in state node2 on kube-node2 ("" for Ready), and
// Calico's and CoreDNS's Deployments available.
func rolloutPhase(t *testing.T, wait bool, node2 string) (*Rollout, *bytes.Buffer, []*hosttest.Fake) {
	t.Helper()
	ready := []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	calicoPod := func(node, waiting string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "calico-node-" + node, Namespace: "kube-system", Labels: map[string]string{"k8s-app": "calico-node"}},
			Spec:   corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: ready}}
		if waiting != "" {
			p.Status.Conditions = nil
			p.Status.Phase = corev1.PodPending
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Image: "quay.io/calico/node:v3.32.1", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: waiting}}}}
		}
		return p
	}
	// Both nodes registered with the pod-network taint, as an install
	// that waits registers them.
	node := func(name string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:   corev1.NodeSpec{Taints: []corev1.Taint{{Key: bootstrap.PodNetworkTaint.Key, Effect: corev1.TaintEffectNoSchedule}}},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	}
	deploy := func(name string) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system"}, Status: appsv1.DeploymentStatus{Replicas: 1, AvailableReplicas: 1}}
	}
	objs := []runtime.Object{
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "calico-node", Namespace: "kube-system"}, Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 2}},
		node("kube-node1"), node("kube-node2"), calicoPod("kube-node1", ""), calicoPod("kube-node2", node2),
		deploy("calico-kube-controllers"), deploy("coredns"),
	}
	hosts := []*hosttest.Fake{{Label: "kube-node1"}, {Label: "kube-node2"}}
	cfg := &cluster.Config{Name: "lab", Nodes: []string{"kube-node1", "kube-node2"}, PodCIDR: "172.31.128.0/18", ServiceCIDR: "172.31.64.0/18"}
	cfg.Default()
	status := &bytes.Buffer{}
	r, err := run.New(run.Options{Command: "install", Status: status}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &Context{Cluster: cfg, Runner: r, Hosts: map[string]host.Host{}, Wait: time.Second, WaitRollout: wait}
	for _, h := range hosts {
		c.Hosts[h.Label] = h
		c.setFacts(h.Label, provision.Facts{Hostname: h.Label, Kernel: "6.1.0"}, "")
	}
	return &Rollout{Context: c, Access: fakeAPIAccess(fake.NewClientset(objs...))}, status, hosts
}

// The rollout phase: a converged cluster passes; one node whose
// calico-node cannot start fails the wait naming that node, its state and
// image; without waiting it is reported and the install goes on. No node
// is touched in any of them (kube-proxy is looked at only after a node has
// been waiting a minute), but for the one read a failed wait makes of the
// node it names: whether containerd lost a container's exit there.
func TestRolloutPhase_SimulatedAPI(t *testing.T) {
	ctx := context.Background()
	var touched []*hosttest.Fake
	r, status, hosts := rolloutPhase(t, true, "")
	touched = append(touched, hosts...)
	if err := r.Run(ctx); err != nil || !strings.Contains(status.String(), "calico-node ready on all 2 nodes") {
		t.Errorf("converged: %v\n%s", err, status)
	}
	for _, n := range []string{"kube-node1", "kube-node2"} {
		if taints := nodeTaints(t, r, n); len(taints) != 0 {
			t.Errorf("converged: %s keeps %v", n, taints)
		}
	}

	r, status, hosts = rolloutPhase(t, true, "ImagePullBackOff")
	touched = append(touched, hosts[0])
	err := r.Run(ctx)
	if log := hosts[1].Log(); len(log) != 1 || !strings.Contains(log[0], "lost-exits.sh") {
		t.Errorf("kube-node2 after the failed wait: %q, want one read by lost-exits.sh", hosts[1].Steps())
	}
	var inc *RolloutIncomplete
	if !errors.As(err, &inc) || !strings.Contains(err.Error(), "kube-node2: calico-node ImagePullBackOff quay.io/calico/node:v3.32.1; pods that need the pod network are kept off it") || strings.Contains(err.Error(), "kube-node1:") {
		t.Errorf("kube-node2's calico-node not starting: %v\n%s", err, status)
	}
	if !strings.Contains(status.String(), "rollout: kube-node1: pod network up after 0s: k8slab.dev/pod-network-unavailable:NoSchedule lifted") {
		t.Errorf("kube-node1's lift not reported:\n%s", status)
	}
	if taints := nodeTaints(t, r, "kube-node1"); len(taints) != 0 {
		t.Errorf("kube-node1 (calico-node ready) keeps %v", taints)
	}
	if taints := nodeTaints(t, r, "kube-node2"); len(taints) != 1 {
		t.Errorf("kube-node2 (calico-node not started) has %v, want the pod-network taint kept", taints)
	}

	r, status, hosts = rolloutPhase(t, false, "ImagePullBackOff")
	touched = append(touched, hosts...)
	if err := r.Run(ctx); err != nil || !strings.Contains(status.String(), "kube-node2: calico-node ImagePullBackOff quay.io/calico/node:v3.32.1, ready true") {
		t.Errorf("--wait=false: %v\n%s", err, status)
	}
	// An earlier run's taint goes from a node whose calico-node is up,
	// waiting or not.
	if n1, n2 := nodeTaints(t, r, "kube-node1"), nodeTaints(t, r, "kube-node2"); len(n1) != 0 || len(n2) != 1 {
		t.Errorf("--wait=false: taints left %v on kube-node1 (ready), %v on kube-node2 (want the pod-network taint kept)", n1, n2)
	}
	for _, h := range touched {
		if len(h.Log()) != 0 {
			t.Errorf("%s was touched: %q", h.Label, h.Steps())
		}
	}
}

func nodeTaints(t *testing.T, r *Rollout, name string) []corev1.Taint {
	t.Helper()
	cl, err := r.kubeClient(r.Access)
	if err != nil {
		t.Fatal(err)
	}
	n, err := cl.Kube.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Spec.Taints
}

// openNodes lifts the pod-network taint on calico-node's own word (the
// NetworkUnavailable condition it clears) or its pod's readiness, from
// no other node, leaves other taints, and a failed update keeps the
// rollout from being done.
func TestOpenNodes_SimulatedAPI(t *testing.T) {
	ctx := context.Background()
	ours := corev1.Taint{Key: bootstrap.PodNetworkTaint.Key, Effect: corev1.TaintEffectNoSchedule}
	cp := corev1.Taint{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}
	node := func(name string, netUnavailable corev1.ConditionStatus, taints ...corev1.Taint) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: taints}}
		if netUnavailable != "" {
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeNetworkUnavailable, Status: netUnavailable}}
		}
		return n
	}
	kube := fake.NewClientset(
		node("kube-node1", corev1.ConditionFalse, cp, ours),
		node("kube-node2", "", ours),
		node("kube-node3", corev1.ConditionTrue, ours),
		node("kube-node4", corev1.ConditionFalse, ours),
	)
	kube.PrependReactor("update", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.UpdateAction).GetObject().(*corev1.Node).Name == "kube-node4" {
			return true, nil, errors.New("etcdserver: request timed out")
		}
		return false, nil, nil
	})
	// The reports as calico.Rollout builds them (its own test checks that).
	st := calico.Status{Done: true}
	for _, n := range []string{"kube-node1", "kube-node2", "kube-node3", "kube-node4"} {
		got, _ := kube.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		r := calico.NodeReport{Node: n, Ready: true}
		for _, c := range got.Status.Conditions {
			r.NetworkAvailable = c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse
		}
		for _, tt := range got.Spec.Taints {
			r.Taints = append(r.Taints, tt.Key+":"+string(tt.Effect))
		}
		if n == "kube-node2" {
			r.Calico = calico.CalicoReady
		}
		st.Nodes = append(st.Nodes, r)
	}
	said := map[string]error{}
	openNodes(ctx, kube, &st, func(node string, err error) { said[node] = err })
	want := map[string][]corev1.Taint{"kube-node1": {cp}, "kube-node2": nil, "kube-node3": {ours}, "kube-node4": {ours}}
	for n, w := range want {
		got, _ := kube.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if len(got.Spec.Taints) != len(w) || len(w) == 1 && got.Spec.Taints[0] != w[0] {
			t.Errorf("%s: taints %v, want %v", n, got.Spec.Taints, w)
		}
	}
	if len(said) != 3 || said["kube-node1"] != nil || said["kube-node2"] != nil || said["kube-node4"] == nil {
		t.Errorf("reported %v: want kube-node1 and kube-node2 lifted, kube-node4's failure, nothing of kube-node3", said)
	}
	if st.Done {
		t.Error("done with kube-node4's taint not lifted")
	}
	if len(st.Nodes[0].Taints) != 1 || len(st.Nodes[2].Taints) != 1 {
		t.Errorf("status taints after lifting: %+v", st.Nodes)
	}
}
