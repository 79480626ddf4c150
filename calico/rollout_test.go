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
			dep.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}}
			for _, p := range []*corev1.Pod{
				{ObjectMeta: metav1.ObjectMeta{Name: "coredns-a", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
					Spec:   corev1.PodSpec{NodeName: "kube-node1"},
					Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}},
				{ObjectMeta: metav1.ObjectMeta{Name: "coredns-b", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-dns"}},
					Spec: corev1.PodSpec{NodeName: "kube-node3"},
					Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "coredns", Image: "registry.k8s.io/coredns/coredns:v1.13.1",
						State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}}},
			} {
				mk(kc.CoreV1().Pods("kube-system").Create(ctx, p, metav1.CreateOptions{}))
			}
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
	if w := st.Workloads; len(w) != 2 || !w[0].Ready || w[1].Ready || w[1].Problem != "1 of 2 replicas available; coredns-b on kube-node3: ContainerCreating registry.k8s.io/coredns/coredns:v1.13.1" {
		t.Errorf("workloads: %+v", w)
	}
}

// A pod held in an init container says which one and for how long: a
// step that takes a second shown running for half an hour points at the
// node's runtime; one that failed gives its exit.
func TestInitProgress(t *testing.T) {
	now := time.Date(2026, 12, 7, 1, 48, 0, 0, time.UTC)
	done := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(now.Add(-39*time.Minute - 10*time.Second))}}
	failed := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "failed to\n reach the API server"}}
	pod := func(states ...corev1.ContainerState) corev1.Pod {
		var p corev1.Pod
		for i, st := range states {
			p.Status.InitContainerStatuses = append(p.Status.InitContainerStatuses, corev1.ContainerStatus{Name: []string{"upgrade-ipam", "install-cni", "ebpf-bootstrap"}[i], State: st})
		}
		return p
	}
	for _, c := range []struct {
		pod  corev1.Pod
		want string
	}{
		{pod(running, waiting, waiting), "init container 1 of 3, upgrade-ipam, running for 39m10s"},
		{pod(done, failed, waiting), "init container 2 of 3, install-cni, exited 1 Error failed to reach the API server"},
		{pod(done, done, corev1.ContainerState{}), "init container 3 of 3, ebpf-bootstrap, not started"},
		{pod(done, done, done), ""},
		{pod(), ""},
	} {
		if got := initProgress(c.pod, now); got != c.want {
			t.Errorf("%q, want %q", got, c.want)
		}
	}
}

// The rollout's report on a calico-node held in its init containers.
func TestPodStatePending(t *testing.T) {
	p := corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{
		{Name: "upgrade-ipam", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(time.Now().Add(-39 * time.Minute))}}},
		{Name: "install-cni", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}},
	}}}
	if got := podState(context.Background(), fake.NewClientset(), p); !strings.HasPrefix(got, "Pending: init container 1 of 2, upgrade-ipam, running for 39m") {
		t.Errorf("%q, want the init container it is held in", got)
	}
}
