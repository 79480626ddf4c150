package calico

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// NodeReport is one node's Calico and readiness state.
type NodeReport struct {
	Node  string `json:"node"`
	Ready bool   `json:"ready"`
	// Calico is "Ready" (calico-node's Felix and BIRD readiness holds), or
	// why not: a waiting reason with the image, or the readiness probe's
	// last complaint ("BIRD is not ready: BGP not established with ...").
	Calico  string `json:"calico"`
	Problem string `json:"problem,omitempty"`
	// NetworkAvailable: calico-node has set the node's NetworkUnavailable
	// condition to False, which it does once its own Felix and BIRD
	// readiness check passes (checked every second, so usually before the
	// kubelet's 10 s readiness probe sees it).
	NetworkAvailable bool `json:"networkAvailable"`
	// Taints are the node's taints, as key:effect.
	Taints []string `json:"taints,omitempty"`
}

// Workload is a Deployment the pod network needs (calico-kube-controllers,
// CoreDNS) and whether it is available.
type Workload struct {
	Name    string `json:"name"`
	Ready   bool   `json:"ready"`
	Problem string `json:"problem,omitempty"`
}

// Status is the rollout of the pod network as read once.
type Status struct {
	Nodes []NodeReport `json:"nodes"`
	// Desired is how many nodes calico-node is scheduled on.
	Desired   int32      `json:"desired"`
	Workloads []Workload `json:"workloads"`
	// Done: every node Ready with calico-node ready, every workload available.
	Done bool `json:"done"`
}

// CalicoReady is NodeReport.Calico on a node whose calico-node is ready.
const CalicoReady = "Ready"

// Rollout reads calico-node per node, the nodes' readiness and the
// Deployments the pod network needs.
func Rollout(ctx context.Context, kube kubernetes.Interface) (Status, error) {
	var st Status
	ds, err := kube.AppsV1().DaemonSets("kube-system").Get(ctx, "calico-node", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return st, fmt.Errorf("DaemonSet kube-system/calico-node does not exist")
	}
	if err != nil {
		return st, err
	}
	st.Desired = ds.Status.DesiredNumberScheduled
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return st, err
	}
	pods, err := kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=calico-node"})
	if err != nil {
		return st, err
	}
	byNode := map[string]string{}
	for _, p := range pods.Items {
		byNode[p.Spec.NodeName] = podState(ctx, kube, p)
	}
	st.Done = true
	for _, n := range nodes.Items {
		r := NodeReport{Node: n.Name, Calico: byNode[n.Name]}
		for _, cond := range n.Status.Conditions {
			switch cond.Type {
			case corev1.NodeReady:
				r.Ready = cond.Status == corev1.ConditionTrue
				if !r.Ready {
					r.Problem = strings.TrimSpace(cond.Reason + ": " + cond.Message)
				}
			case corev1.NodeNetworkUnavailable:
				r.NetworkAvailable = cond.Status == corev1.ConditionFalse
			}
		}
		for _, t := range n.Spec.Taints {
			r.Taints = append(r.Taints, t.Key+":"+string(t.Effect))
		}
		if r.Calico == "" {
			r.Calico = "no calico-node pod"
		}
		st.Done = st.Done && r.Ready && r.Calico == CalicoReady
		st.Nodes = append(st.Nodes, r)
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Node < st.Nodes[j].Node })
	for _, name := range []string{"calico-kube-controllers", "coredns"} {
		w := Workload{Name: name}
		d, err := kube.AppsV1().Deployments("kube-system").Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			w.Problem = "Deployment kube-system/" + name + " does not exist"
		case err != nil:
			return st, err
		case d.Status.AvailableReplicas < 1 || d.Status.AvailableReplicas < d.Status.Replicas:
			w.Problem = fmt.Sprintf("%d of %d replicas available", d.Status.AvailableReplicas, d.Status.Replicas) + notReadyPods(ctx, kube, d)
		default:
			w.Ready = true
		}
		st.Done = st.Done && w.Ready
		st.Workloads = append(st.Workloads, w)
	}
	return st, nil
}

// notReadyPods names a Deployment's pods that are not ready, with their
// node and state ("; calico-kube-controllers-6c9f on kube-node4: Running,
// not ready: ..."); nothing when they cannot be read.
func notReadyPods(ctx context.Context, kube kubernetes.Interface, d *appsv1.Deployment) string {
	if d.Spec.Selector == nil {
		return ""
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return ""
	}
	pods, err := kube.CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range pods.Items {
		if st := podState(ctx, kube, p); st != CalicoReady {
			node := p.Spec.NodeName
			if node == "" {
				node = "no node"
			}
			fmt.Fprintf(&b, "; %s on %s: %s", p.Name, node, st)
		}
	}
	return b.String()
}

// initProgress says which init container a pod is at, and since when:
// a step that normally takes a second (upgrade-ipam) shown running for
// half an hour is the runtime's fault, not Calico's (containerd once
// lost such a container's exit on a saturated emulated node: it could not
// delete the ended task within its fixed 10 s, nor on any retry, and the
// kubelet saw the init container running for the rest of the install).
func initProgress(p corev1.Pod, now time.Time) string {
	n := len(p.Status.InitContainerStatuses)
	for i, cs := range p.Status.InitContainerStatuses {
		where := fmt.Sprintf("init container %d of %d, %s,", i+1, n, cs.Name)
		switch {
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0:
			continue
		case cs.State.Terminated != nil:
			t := cs.State.Terminated
			return strings.TrimSpace(fmt.Sprintf("%s exited %d %s %s", where, t.ExitCode, t.Reason, oneLine(t.Message)))
		case cs.State.Running != nil:
			return fmt.Sprintf("%s running for %s", where, now.Sub(cs.State.Running.StartedAt.Time).Round(time.Second))
		default:
			return where + " not started"
		}
	}
	return ""
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// podState is "Ready", a container's waiting reason with its image, or
// for a running pod that is not ready the readiness probe's last
// complaint, which names what calico-node lacks (Felix, BIRD, a BGP peer).
func podState(ctx context.Context, kube kubernetes.Interface, p corev1.Pod) string {
	for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "PodInitializing" {
			return w.Reason + " " + cs.Image
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return CalicoReady
		}
	}
	if p.Status.Phase != corev1.PodRunning {
		if init := initProgress(p, time.Now()); init != "" {
			return string(p.Status.Phase) + ": " + init
		}
		return string(p.Status.Phase)
	}
	state := "Running, not ready"
	evs, err := kube.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + p.Name + ",reason=Unhealthy"})
	if err == nil && len(evs.Items) > 0 {
		last := evs.Items[0]
		for _, e := range evs.Items[1:] {
			if e.LastTimestamp.After(last.LastTimestamp.Time) {
				last = e
			}
		}
		state += ": " + oneLine(last.Message)
	}
	return state
}
