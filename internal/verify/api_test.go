package verify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/kube"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// failingAPI answers its first fails node listings with err.
func failingAPI(fails int, err error) (*fake.Clientset, *int) {
	kc := fake.NewClientset()
	calls := 0
	kc.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		if calls <= fails {
			return true, nil, err
		}
		return false, nil, nil
	})
	return kc, &calls
}

func TestReadClusterRetriesWhileTheAPIServerSaysNotNow(t *testing.T) {
	tlsTimeout := errors.New(`Get "https://172.31.3.11:6443/api/v1/nodes": net/http: TLS handshake timeout`)
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New("no"))
	tests := []struct {
		name      string
		fails     int
		err       error
		wait      time.Duration
		wantCalls int
		wantErr   bool
	}{
		{"answers at once", 0, nil, time.Minute, 1, false},
		{"a TLS handshake timeout, then an answer", 1, tlsTimeout, time.Minute, 2, false},
		{"still timing out when the wait is over", 100, tlsTimeout, time.Second, 1, true},
		{"forbidden is an answer: not asked again", 100, forbidden, time.Minute, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc, calls := failingAPI(tt.fails, tt.err)
			_, _, err := readCluster(context.Background(), kc, tt.wait)
			if (err != nil) != tt.wantErr || *calls != tt.wantCalls {
				t.Fatalf("err %v after %d calls; want error %v after %d", err, *calls, tt.wantErr, tt.wantCalls)
			}
		})
	}
}

func TestRunJudgesAnAPIServerThatDoesNotAnswer(t *testing.T) {
	kc, _ := failingAPI(100, errors.New("net/http: TLS handshake timeout"))
	checks := Run(context.Background(), Cluster{Config: labConfig(), Kube: &kube.Client{Kube: kc}, APIWait: time.Second})
	got := map[string]Check{}
	for _, c := range checks {
		got[c.Name] = c
	}
	if c := got[apiCheck]; c.Status != Fail || !strings.Contains(c.Reason, "TLS handshake timeout") {
		t.Errorf("%s: %+v", apiCheck, c)
	}
	if c := got["etcd members healthy"]; c.Status != Skip {
		t.Errorf("etcd is judged without the API server: %+v", c)
	}
	if Failed(checks) != 1 || len(checks) != 3 {
		t.Errorf("checks: %+v", checks)
	}
}

// TestRunSettles: while a node or pod check fails, the cluster is read
// again until --settle is over; what held only after that wait says so,
// and a failure that lasts is still judged FAIL.
func TestRunSettles(t *testing.T) {
	tests := []struct {
		name      string
		unknown   int // readings in which kube-node3 has stopped posting status
		settle    time.Duration
		want      Status
		wantReads int
		wantNote  bool
	}{
		{"healthy at once: read once", 0, time.Minute, Pass, 1, false},
		{"a node that catches up within --settle", 2, time.Minute, Pass, 3, true},
		{"--settle 0 judges the first reading", 2, 0, Fail, 1, false},
		{"a node that never catches up: FAIL when --settle is over", 1000, 50 * time.Millisecond, Fail, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := fake.NewClientset()
			reads := 0
			kc.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
				reads++
				nodes := labNodes(corev1.ConditionTrue, "")
				if reads <= tt.unknown {
					nodes[2] = node("kube-node3", "172.31.4.11", false, corev1.ConditionUnknown, "Kubelet stopped posting node status.")
				}
				return true, &corev1.NodeList{Items: nodes}, nil
			})
			for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
				p := pod(c+"-kube-node1", true, corev1.PodRunning, "")
				p.Namespace = metav1.NamespaceSystem
				if _, err := kc.CoreV1().Pods(metav1.NamespaceSystem).Create(context.Background(), &p, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			_, _, _, checks, err := settle(context.Background(), Cluster{Config: labConfig(), Kube: &kube.Client{Kube: kc},
				Settle: tt.settle, settleEvery: 10 * time.Millisecond}, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var got Check
			for _, c := range checks {
				if c.Name == "kubelet posting status on every node" {
					got = c
				}
			}
			if got.Status != tt.want {
				t.Errorf("%s: %s (%s), want %s", got.Name, got.Status, got.Reason, tt.want)
			}
			if tt.wantReads > 0 && reads != tt.wantReads {
				t.Errorf("read the nodes %d times, want %d", reads, tt.wantReads)
			}
			if note := strings.Contains(got.Reason, "of --settle)"); note != tt.wantNote {
				t.Errorf("reason %q: says it waited %v, want %v", got.Reason, note, tt.wantNote)
			}
		})
	}
}

// TestSettleExcusesOnlyACalicoKnownDown: nodes NotReady for want of a
// CNI are SKIP only when calico-node is seen not running; when its state
// cannot be read (the API server timed out), they are FAIL and the
// pod-network checks say why they cannot run.
func TestSettleExcusesOnlyACalicoKnownDown(t *testing.T) {
	timeout := errors.New(`Get "https://172.31.3.11:6443/apis/apps/v1/namespaces/kube-system/daemonsets/calico-node": net/http: request canceled (Client.Timeout exceeded while awaiting headers)`)
	tests := []struct {
		name       string
		dsErr      error
		wantReady  Status
		wantPodNet string
	}{
		{"calico-node seen waiting for its image", nil, Skip, "calico-node not ready: ErrImagePull quay.io/calico/cni:v3.32.1 on kube-node1"},
		{"calico-node's state unreadable", timeout, Fail, "calico-node's state could not be read: " + timeout.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := fake.NewClientset()
			ctx := context.Background()
			for _, n := range labNodes(corev1.ConditionFalse, noCNI) {
				if _, err := kc.CoreV1().Nodes().Create(ctx, &n, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "calico-node", Namespace: metav1.NamespaceSystem},
				Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 4}}
			p := pod("calico-node-x", true, corev1.PodPending, "ErrImagePull")
			p.Namespace, p.Labels, p.Spec.NodeName = metav1.NamespaceSystem, map[string]string{"k8s-app": "calico-node"}, "kube-node1"
			p.Status.ContainerStatuses[0].Image = "quay.io/calico/cni:v3.32.1"
			if _, err := kc.AppsV1().DaemonSets(metav1.NamespaceSystem).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := kc.CoreV1().Pods(metav1.NamespaceSystem).Create(ctx, &p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if tt.dsErr != nil {
				kc.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tt.dsErr })
			}
			_, _, podNetSkip, checks, err := settle(ctx, Cluster{Config: labConfig(), Kube: &kube.Client{Kube: kc}}, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range checks {
				if c.Name == "nodes Ready" && c.Status != tt.wantReady {
					t.Errorf("nodes Ready: %s (%s), want %s", c.Status, c.Reason, tt.wantReady)
				}
			}
			if !strings.HasPrefix(podNetSkip, tt.wantPodNet) {
				t.Errorf("pod-network checks skipped for %q, want %q", podNetSkip, tt.wantPodNet)
			}
		})
	}
}
