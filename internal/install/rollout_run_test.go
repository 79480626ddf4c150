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
	node := func(name string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
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
// been waiting a minute).
func TestRolloutPhase_SimulatedAPI(t *testing.T) {
	ctx := context.Background()
	var touched []*hosttest.Fake
	r, status, hosts := rolloutPhase(t, true, "")
	touched = append(touched, hosts...)
	if err := r.Run(ctx); err != nil || !strings.Contains(status.String(), "calico-node ready on all 2 nodes") {
		t.Errorf("converged: %v\n%s", err, status)
	}

	r, status, hosts = rolloutPhase(t, true, "ImagePullBackOff")
	touched = append(touched, hosts...)
	err := r.Run(ctx)
	var inc *RolloutIncomplete
	if !errors.As(err, &inc) || !strings.Contains(err.Error(), "kube-node2: calico-node ImagePullBackOff quay.io/calico/node:v3.32.1") || strings.Contains(err.Error(), "kube-node1:") {
		t.Errorf("kube-node2's calico-node not starting: %v\n%s", err, status)
	}

	r, status, hosts = rolloutPhase(t, false, "ImagePullBackOff")
	touched = append(touched, hosts...)
	if err := r.Run(ctx); err != nil || !strings.Contains(status.String(), "kube-node2: calico-node ImagePullBackOff quay.io/calico/node:v3.32.1, ready true") {
		t.Errorf("--wait=false: %v\n%s", err, status)
	}
	for _, h := range touched {
		if len(h.Log()) != 0 {
			t.Errorf("%s was touched: %q", h.Label, h.Steps())
		}
	}
}
