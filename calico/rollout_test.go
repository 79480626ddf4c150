package calico

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestRollout_SimulatedAPI: done only when calico-node is ready (not merely running) on
// every Ready node and calico-kube-controllers and CoreDNS are available;
// a running calico-node that is not ready is named with its readiness
// probe's last complaint.
func TestRollout_SimulatedAPI(t *testing.T) {
	ctx := context.Background()
	kc := fake.NewClientset()
	mk := func(obj interface{ GetName() string }, err error) {
		if err != nil {
			t.Fatalf("%s: %v", obj.GetName(), err)
		}
	}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "calico-node", Namespace: "kube-system"}, Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 2}}
	mk(kc.AppsV1().DaemonSets("kube-system").Create(ctx, ds, metav1.CreateOptions{}))
	for _, n := range []string{"kube-node1", "kube-node3"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
		if n == "kube-node1" {
			node.Status.Conditions = append(node.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse})
		} else {
			node.Spec.Taints = []corev1.Taint{{Key: "k8slab.dev/pod-network-unavailable", Effect: corev1.TaintEffectNoSchedule}}
		}
		mk(kc.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}))
		ready := corev1.ConditionTrue
		if n == "kube-node3" {
			ready = corev1.ConditionFalse
		}
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "calico-node-" + n, Namespace: "kube-system", Labels: map[string]string{"k8s-app": "calico-node"}},
			Spec: corev1.PodSpec{NodeName: n},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "calico-node", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}}
		mk(kc.CoreV1().Pods("kube-system").Create(ctx, p, metav1.CreateOptions{}))
	}
	for i, msg := range []string{"Readiness probe failed: calico/node is not ready: felix is not ready", "Readiness probe failed: calico/node is not ready: BIRD is not ready: BGP not established with 172.31.3.11"} {
		ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "ev" + string(rune('a'+i)), Namespace: "kube-system"},
			InvolvedObject: corev1.ObjectReference{Name: "calico-node-kube-node3"}, Reason: "Unhealthy", Message: msg,
			LastTimestamp: metav1.NewTime(time.Unix(int64(1000+i), 0))}
		mk(kc.CoreV1().Events("kube-system").Create(ctx, ev, metav1.CreateOptions{}))
	}
	for _, d := range []string{"calico-kube-controllers", "coredns"} {
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: d, Namespace: "kube-system"}, Status: appsv1.DeploymentStatus{Replicas: 2, AvailableReplicas: 2}}
		if d == "coredns" {
			dep.Status.AvailableReplicas = 1
		}
		mk(kc.AppsV1().Deployments("kube-system").Create(ctx, dep, metav1.CreateOptions{}))
	}
	st, err := Rollout(ctx, kc)
	if err != nil {
		t.Fatal(err)
	}
	if st.Done || st.Desired != 2 || len(st.Nodes) != 2 {
		t.Fatalf("status %+v: want not done, 2 desired, 2 nodes", st)
	}
	if n1, n3 := st.Nodes[0], st.Nodes[1]; !n1.NetworkAvailable || len(n1.Taints) != 0 || n3.NetworkAvailable || len(n3.Taints) != 1 || n3.Taints[0] != "k8slab.dev/pod-network-unavailable:NoSchedule" {
		t.Errorf("network available and taints: %+v", st.Nodes)
	}
	if st.Nodes[0].Calico != CalicoReady {
		t.Errorf("kube-node1: %q, want %q", st.Nodes[0].Calico, CalicoReady)
	}
	// The fake clientset ignores field selectors; the real API server
	// returns this pod's Unhealthy events, of which the latest counts.
	if got := st.Nodes[1].Calico; !strings.HasPrefix(got, "Running, not ready: ") || !strings.HasSuffix(got, "BGP not established with 172.31.3.11") {
		t.Errorf("kube-node3: %q, want the probe's last complaint", got)
	}
	if w := st.Workloads; len(w) != 2 || !w[0].Ready || w[1].Ready || w[1].Problem != "1 of 2 replicas available" {
		t.Errorf("workloads: %+v", w)
	}
}
