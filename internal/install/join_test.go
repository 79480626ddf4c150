package install

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
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
	k8stesting "k8s.io/client-go/testing"
)

const caHash = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// joinState answers Join's check on a fake node: joined, partial or none.
func joinState(st string) hosttest.Rule {
	return hosttest.Rule{Match: "/etc/kubernetes/kubelet.conf", Stdout: st + "\n"}
}

// detachedExit makes the detached kubeadm step end with code (its unit
// not running before, its status file then holding code).
func detachedExit(code string) []hosttest.Rule {
	return []hosttest.Rule{
		{Match: "set -- 'state'", Stdout: "state=inactive\n"},
		{Match: "set -- 'follow'", Stdout: "status=" + code + "\nlast=kubeadm's last line\n"},
		{Match: "set -- 'tail'", Stdout: "error execution phase kubelet-start: the node said no\n"},
	}
}

// joinPhase is the join phase of a three-node cluster (kube-node1 the
// control plane, one etcd member: no etcd client needed) on fake hosts.
func joinPhase(t *testing.T, workers map[string]*hosttest.Fake) (*Join, *bytes.Buffer) {
	t.Helper()
	cp := &hosttest.Fake{Label: "kube-node1"}
	hosts := map[string]host.Host{"kube-node1": cp}
	list := []host.Host{cp}
	cfg := &cluster.Config{Name: "lab", ControlPlane: "kube-node1", Etcd: []string{"kube-node1"}, Nodes: []string{"kube-node1"}}
	for name, h := range workers {
		h.Label = name
		hosts[name], list = h, append(list, h)
		cfg.Nodes = append(cfg.Nodes, name)
		cfg.Workers = append(cfg.Workers, name)
	}
	var status bytes.Buffer
	r, err := run.New(run.Options{Command: "install", Status: &status}, list)
	if err != nil {
		t.Fatal(err)
	}
	c := &Context{Cluster: cfg, Runner: r, Hosts: hosts, Wait: time.Minute}
	for i, n := range cfg.Nodes {
		c.setFacts(n, provision.Facts{Hostname: n}, fmt.Sprintf("172.31.3.%d", 11+i))
	}
	a := &Access{}
	a.set([]byte("admin.conf"), caHash, "abcdef.0123456789abcdef")
	return &Join{Context: c, Access: a}, &status
}

func TestJoinLeavesJoinedNodesAlone_SimulatedNodes(t *testing.T) {
	w := &hosttest.Fake{Rules: []hosttest.Rule{joinState("joined")}}
	j, _ := joinPhase(t, map[string]*hosttest.Fake{"kube-node2": w})
	if err := j.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if log := w.Log(); len(log) != 1 || !strings.Contains(log[0], "kubelet.conf") {
		t.Errorf("a joined node got more than the check: %q", w.Steps())
	}
}

func TestJoinRendersTheConfigAndResumesAnInterruptedJoin_SimulatedNodes(t *testing.T) {
	fresh := &hosttest.Fake{Rules: append([]hosttest.Rule{joinState("none")}, detachedExit("0")...)}
	partial := &hosttest.Fake{Rules: append([]hosttest.Rule{joinState("partial")}, detachedExit("0")...)}
	j, _ := joinPhase(t, map[string]*hosttest.Fake{"kube-node2": fresh, "kube-node3": partial})
	if err := j.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, w := range map[string]*hosttest.Fake{"kube-node2": fresh, "kube-node3": partial} {
		cfg := string(w.Files[joinConfigPath])
		for _, want := range []string{"kind: JoinConfiguration", "abcdef.0123456789abcdef", caHash, "apiServerEndpoint: 172.31.3.11:6443", "name: " + name} {
			if !strings.Contains(cfg, want) {
				t.Errorf("%s: join config lacks %q:\n%s", name, want, cfg)
			}
		}
		if !w.Did("kubeadm join --config " + joinConfigPath) {
			t.Errorf("%s: no kubeadm join in %q", name, w.Steps())
		}
	}
	// The interrupted join goes on past the preflight its own first half
	// would fail; a fresh one keeps kubeadm's preflight.
	if !partial.Did("--ignore-preflight-errors=all") {
		t.Errorf("the interrupted join was not resumed: %q", partial.Steps())
	}
	if fresh.Did("--ignore-preflight-errors=all") {
		t.Errorf("a fresh join skipped kubeadm's preflight: %q", fresh.Steps())
	}
	// Order on a node: check, config, then the join.
	log := fresh.Log()
	if !(strings.Contains(log[0], "kubelet.conf") && indexOf(log, "upload: "+joinConfigPath) < indexOf(log, "kubeadm join")) {
		t.Errorf("order: %q", fresh.Steps())
	}
}

func TestJoinReportsTheFailedNodeAndKubeadmsLog_SimulatedNodes(t *testing.T) {
	w := &hosttest.Fake{Rules: append([]hosttest.Rule{joinState("none")}, detachedExit("1")...)}
	j, _ := joinPhase(t, map[string]*hosttest.Fake{"kube-node2": w})
	err := j.Run(context.Background())
	if err == nil {
		t.Fatal("a failed kubeadm join passed")
	}
	if !strings.Contains(err.Error(), "join failed") || !j.Runner.Failed() {
		t.Errorf("error %v (runner failed: %v)", err, j.Runner.Failed())
	}
	rep := j.Runner.Report(nil, err)
	var got string
	for _, h := range rep.Hosts {
		if h.Host == "kube-node2" {
			got = h.Error
		}
	}
	if !strings.Contains(got, "exited with 1") || !strings.Contains(got, "the node said no") {
		t.Errorf("kube-node2's error %q does not carry kubeadm's exit and log", got)
	}
}

func indexOf(log []string, s string) int {
	for i, e := range log {
		if strings.Contains(e, s) {
			return i
		}
	}
	return -1
}

// A re-run whose control plane was already initialized has no token of
// its own: one is created through the API for the worker still to join,
// and only then.
func TestJoinCreatesATokenWhenTheClusterWasThere_SimulatedAPI(t *testing.T) {
	for _, tt := range []struct {
		state      string
		wantTokens int
	}{{"none", 1}, {"joined", 0}} {
		w := &hosttest.Fake{Rules: append([]hosttest.Rule{joinState(tt.state)}, detachedExit("0")...)}
		j, _ := joinPhase(t, map[string]*hosttest.Fake{"kube-node2": w})
		kc := fake.NewClientset()
		j.Access = fakeAPIAccess(kc)
		j.Access.set([]byte("admin.conf"), caHash, "") // no kubeadm init in this run
		if err := j.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		secrets, _ := kc.CoreV1().Secrets("kube-system").List(context.Background(), metav1.ListOptions{})
		if len(secrets.Items) != tt.wantTokens {
			t.Fatalf("worker %s: %d bootstrap tokens created, want %d", tt.state, len(secrets.Items), tt.wantTokens)
		}
		if tt.wantTokens == 1 {
			s := secrets.Items[0].StringData
			if !strings.Contains(string(w.Files[joinConfigPath]), s["token-id"]+"."+s["token-secret"]) {
				t.Errorf("the join config does not carry the token created through the API:\n%s", w.Files[joinConfigPath])
			}
		}
	}
}

// --network-first: the workers' joins wait until calico-node is ready on
// the control plane, whose pod-network taint is lifted then; without it
// the joins do not read the rollout at all.
func TestJoinNetworkFirstBringsEachNodesNetworkUpInTurn_SimulatedAPI(t *testing.T) {
	const start = "set -- 'start'"
	for _, first := range []bool{true, false} {
		workers := map[string]*hosttest.Fake{}
		for _, w := range []string{"kube-node2", "kube-node3"} {
			workers[w] = &hosttest.Fake{Rules: append([]hosttest.Rule{joinState("none")}, detachedExit("0")...)}
		}
		j, status := joinPhase(t, workers)
		j.NetworkFirst, j.GatePods, j.JoinParallel = first, true, 1
		names := []string{"kube-node1", "kube-node2", "kube-node3"}
		objs := []runtime.Object{&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "calico-node", Namespace: "kube-system"}, Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3}}}
		pods := map[string]*corev1.Pod{}
		for _, n := range names {
			objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n},
				Spec:   corev1.NodeSpec{Taints: []corev1.Taint{{Key: bootstrap.PodNetworkTaint.Key, Effect: corev1.TaintEffectNoSchedule}}},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}})
			pods[n] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "calico-node-" + n, Namespace: "kube-system", Labels: map[string]string{"k8s-app": "calico-node"}},
				Spec: corev1.PodSpec{NodeName: n},
				Status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Image: "quay.io/calico/node:v3.32.1",
					State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}}}}
			objs = append(objs, pods[n])
		}
		kc := fake.NewClientset(objs...)
		// A node's calico-node turns ready on the second read of the pods
		// after the node is up (the control plane from the start, a worker
		// once its join started). No worker may start its join before the
		// control plane's is ready, nor while the worker before it waits.
		var mu sync.Mutex
		lists, reads, ready := 0, map[string]int{}, map[string]bool{}
		var early []string
		kc.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
			mu.Lock()
			defer mu.Unlock()
			lists++
			up := []string{"kube-node1"}
			for _, w := range names[1:] {
				if workers[w].Did(start) {
					up = append(up, w)
				}
			}
			var waiting []string
			for _, n := range up {
				if !ready[n] {
					waiting = append(waiting, n)
				}
			}
			if len(waiting) > 1 {
				early = append(early, strings.Join(waiting, " and ")+" joined, calico-node ready on neither")
			}
			for _, n := range waiting {
				if reads[n]++; reads[n] == 2 {
					ready[n] = true
					p := pods[n].DeepCopy()
					p.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
					if err := kc.Tracker().Update(corev1.SchemeGroupVersion.WithResource("pods"), p, "kube-system"); err != nil {
						t.Error(err)
					}
				}
			}
			return false, nil, nil
		})
		j.Access = fakeAPIAccess(kc)
		j.Access.set([]byte("admin.conf"), caHash, "abcdef.0123456789abcdef")
		if err := j.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		for w, h := range workers {
			if !h.Did(start) {
				t.Fatalf("network first %v: %s did not join:\n%s", first, w, strings.Join(h.Steps(), "\n"))
			}
		}
		tainted := 0
		for _, n := range names {
			node, err := kc.CoreV1().Nodes().Get(context.Background(), n, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tainted += len(node.Spec.Taints)
		}
		if !first {
			if lists != 0 || tainted != 3 {
				t.Errorf("without --network-first the join read the pods %d times or lifted taints (%d left of 3)", lists, tainted)
			}
			continue
		}
		if len(early) > 0 {
			t.Errorf("joins did not wait for the network of the node before them: %s", strings.Join(early, "; "))
		}
		if tainted != 0 {
			t.Errorf("%d pod-network taints left", tainted)
		}
		for _, want := range []string{"join: kube-node1: calico-node ready after", "kube-node2: join: calico-node ready ", "kube-node3: join: calico-node ready "} {
			if !strings.Contains(status.String(), want) {
				t.Errorf("status does not say %q:\n%s", want, status)
			}
		}
	}
}

func TestJoinNetworkFirstGoesOnAfterItsWait_SimulatedAPI(t *testing.T) {
	w := &hosttest.Fake{Rules: append([]hosttest.Rule{joinState("none")}, detachedExit("0")...)}
	j, status := joinPhase(t, map[string]*hosttest.Fake{"kube-node2": w})
	j.NetworkFirst, j.GatePods, j.Wait = true, true, 1500*time.Millisecond
	// calico-node never ready anywhere.
	kc := fake.NewClientset(
		&appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "calico-node", Namespace: "kube-system"}, Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 2}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "calico-node-a", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "calico-node"}},
			Spec: corev1.PodSpec{NodeName: "kube-node1"}, Status: corev1.PodStatus{Phase: corev1.PodPending}})
	j.Access = fakeAPIAccess(kc)
	j.Access.set([]byte("admin.conf"), caHash, "abcdef.0123456789abcdef")
	if err := j.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !w.Did("set -- 'start'") {
		t.Fatalf("kube-node2 did not join after the wait:\n%s", strings.Join(w.Steps(), "\n"))
	}
	for _, want := range []string{
		"join: kube-node1: calico-node not ready after 1.5s; the workers join regardless",
		"kube-node2: join: calico-node not ready after 1.5s; the next join goes on regardless",
	} {
		if !strings.Contains(status.String(), want) {
			t.Errorf("status does not say %q:\n%s", want, status)
		}
	}
}
