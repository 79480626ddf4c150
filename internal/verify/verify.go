// Package verify judges an installed cluster as a list of named checks,
// each PASS, FAIL or SKIP with a reason. A check that cannot run says SKIP
// and why; it never passes by default.
package verify

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/kube"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
)

// Status of a check.
type Status string

const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// Check is one verdict.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Etcd checks the etcd members; nil when the cluster's etcd cannot be
// reached by the caller (the check then says SKIP).
type Etcd func(ctx context.Context) (bootstrap.EtcdHealth, error)

// Cluster is what verify looks at.
type Cluster struct {
	Config *cluster.Config
	Kube   *kube.Client
	Etcd   Etcd
	// PodTimeout bounds each test pod's start and verdict (default 4 min).
	PodTimeout time.Duration
	// APIWait is how long the API server's reads may fail in a way that
	// says "not now" (timeouts, refused connections) before verify judges
	// it down (default 2 min): right after an install the emulated
	// control plane timed out TLS handshakes and answered a minute later.
	APIWait time.Duration
	// Settle is how long the node and pod checks may take to pass: they
	// are read again every few seconds while one fails (0: the first
	// reading is judged). A control plane that has just been initialized
	// answers before all of it is Ready (kube-apiserver's readiness
	// probe, a joined node's first status).
	Settle time.Duration
	// settleEvery is how often a settling cluster is read again (default
	// 5 s; tests make it short).
	settleEvery time.Duration
}

const apiCheck = "API server answers"

// Run performs every check and returns them all, failures included. An
// API server that does not answer is a failed check, not an error: the
// checks that need it say SKIP, etcd (reached over SSH) is still judged.
func Run(ctx context.Context, c Cluster) []Check {
	wait := c.APIWait
	if wait == 0 {
		wait = 2 * time.Minute
	}
	nodes, pods, podNetSkip, state, err := settle(ctx, c, wait)
	if err != nil {
		return []Check{
			{apiCheck, Fail, err.Error()},
			{"nodes, pods, Service, IPPool and pod network", Skip, "the API server did not answer"},
			etcdCheck(ctx, c),
		}
	}
	out := []Check{{apiCheck, Pass, fmt.Sprintf("%d nodes, %d kube-system pods", len(nodes.Items), len(pods.Items))}}
	out = append(out, state...)
	out = append(out, etcdCheck(ctx, c))
	out = append(out, serviceCheck(ctx, c))
	out = append(out, ippoolCheck(ctx, c))
	out = append(out, calicoCheck(podNetSkip, len(nodes.Items), c.Config.Calico.Encapsulation == "VXLAN"))
	if c.Config.Calico.BGP == cluster.BGPAsPerRack {
		every := c.settleEvery
		if every == 0 {
			every = 5 * time.Second
		}
		out = append(out, bgpCheck(ctx, c, nodes.Items, 2*time.Minute, every))
	}
	timeout := c.PodTimeout
	if timeout == 0 {
		timeout = defaultPodTimeout
	}
	out = append(out, podNetwork(ctx, c.Kube.Kube, nodes.Items, podNetSkip, timeout)...)
	return out
}

// settle reads the cluster and judges its nodes and pods, again while a
// check fails and c.Settle lasts. podNetSkip is why the pod-network
// checks cannot run ("" when they can).
func settle(ctx context.Context, c Cluster, wait time.Duration) (nodes *corev1.NodeList, pods *corev1.PodList, podNetSkip string, state []Check, err error) {
	every := c.settleEvery
	if every == 0 {
		every = 5 * time.Second
	}
	start := time.Now()
	for {
		if nodes, pods, err = readCluster(ctx, c.Kube.Kube, wait); err != nil {
			return nil, nil, "", nil, err
		}
		calicoDown, calicoErr := calicoProblem(ctx, c.Kube)
		podNetSkip = calicoDown
		if calicoErr != nil {
			podNetSkip = calicoErr.Error()
		}
		state = append(nodeChecks(c.Config, nodes.Items, calicoDown), podChecks(c.Config, nodes.Items, pods.Items, calicoDown)...)
		if Failed(state) == 0 || time.Since(start)+every > c.Settle || sleep(ctx, every) != nil {
			break
		}
	}
	if took := time.Since(start); took >= every {
		// Say so: these held only after the cluster was given time.
		for i := range state {
			state[i].Reason += fmt.Sprintf(" (read after %s of --settle)", took.Round(time.Millisecond))
		}
	}
	return nodes, pods, podNetSkip, state, nil
}

// readCluster lists the nodes and kube-system pods, asking again while
// the API server says "not now" and wait lasts.
func readCluster(ctx context.Context, k kubernetes.Interface, wait time.Duration) (nodes *corev1.NodeList, pods *corev1.PodList, err error) {
	err = kube.RetryTransient(ctx, wait, 2*time.Second, func() (err error) {
		if nodes, err = k.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
			return fmt.Errorf("listing nodes: %w", err)
		}
		if pods, err = k.CoreV1().Pods(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{}); err != nil {
			return fmt.Errorf("listing kube-system pods: %w", err)
		}
		return nil
	})
	return nodes, pods, err
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// Failed counts the failing checks.
func Failed(checks []Check) int {
	n := 0
	for _, c := range checks {
		if c.Status == Fail {
			n++
		}
	}
	return n
}

// calicoProblem is why the pod network cannot work ("" when calico-node
// runs on every node). Only a calico-node known not to run excuses nodes
// and pods that wait for the pod network: one run's verify, whose reads of
// calico-node timed out on a saturated API server, called NotReady nodes
// "waiting for the pod network" with that timeout as the reason. So a
// failed read comes back as err, and excuses nothing.
func calicoProblem(ctx context.Context, k *kube.Client) (down string, err error) {
	st, err := calico.Rollout(ctx, k.Kube)
	if err != nil {
		return "", fmt.Errorf("calico-node's state could not be read: %w", err)
	}
	var bad []string
	for _, r := range st.Nodes {
		if r.Calico != calico.CalicoReady {
			bad = append(bad, r.Calico+" on "+r.Node)
		}
	}
	if st.Desired == 0 {
		return "calico-node is scheduled nowhere", nil
	}
	if len(bad) > 0 {
		return "calico-node not ready: " + strings.Join(bad, ", "), nil
	}
	return "", nil
}

const (
	checkCalico      = "calico-node ready on every node (Felix, BIRD: BGP Established)"
	checkCalicoVXLAN = "calico-node ready on every node (Felix; VXLAN runs no BGP)"
)

// calicoCheck reads calico-node's own readiness. With BIRD running, its
// readiness probe (calico-node -felix-ready -bird-ready) holds only while
// Felix programs the dataplane and BIRD has every BGP session Established;
// a VXLAN-only cluster runs no BIRD and its probe asks Felix alone.
func calicoCheck(down string, nodes int, vxlan bool) Check {
	name, ok := checkCalico, fmt.Sprintf("%d nodes: Felix ready, every BIRD BGP session Established", nodes)
	if vxlan {
		name, ok = checkCalicoVXLAN, fmt.Sprintf("%d nodes: Felix ready", nodes)
	}
	if down != "" {
		return Check{name, Fail, down}
	}
	return Check{name, Pass, ok}
}

func internalIP(n corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

func ready(n corev1.Node) corev1.NodeCondition {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c
		}
	}
	return corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionUnknown, Reason: "no Ready condition"}
}

func nodeChecks(cfg *cluster.Config, nodes []corev1.Node, calicoDown string) []Check {
	byIP := map[string]corev1.Node{}
	for _, n := range nodes {
		byIP[internalIP(n)] = n
	}
	workers := map[string]bool{}
	for _, w := range cfg.Workers {
		workers[w] = true
	}
	var missing, roles, stopped, notReady, netWait []string
	for _, node := range cfg.Nodes {
		ip := cluster.Address(node)
		n, ok := byIP[ip]
		if !ok {
			missing = append(missing, fmt.Sprintf("%s: no Kubernetes node with INTERNAL-IP %s", node, ip))
			continue
		}
		_, isCP := n.Labels["node-role.kubernetes.io/control-plane"]
		if isCP != (node == cfg.ControlPlane) {
			roles = append(roles, fmt.Sprintf("%s (%s): control-plane role %v, want %v", n.Name, ip, isCP, node == cfg.ControlPlane))
		}
		for _, t := range n.Spec.Taints {
			if t.Key == "node-role.kubernetes.io/control-plane" && t.Effect == corev1.TaintEffectNoSchedule && workers[node] {
				roles = append(roles, fmt.Sprintf("%s: a worker, but tainted NoSchedule as a control plane", n.Name))
			}
			if t.Key == bootstrap.PodNetworkTaint.Key {
				roles = append(roles, fmt.Sprintf("%s: still tainted %s:%s (the install's rollout lifts it once calico-node marks the node's network available; run install again)", n.Name, t.Key, t.Effect))
			}
		}
		r := ready(n)
		switch {
		case r.Status == corev1.ConditionTrue:
		case r.Status == corev1.ConditionUnknown:
			stopped = append(stopped, fmt.Sprintf("%s (%s): %s", n.Name, ip, strings.TrimSpace(r.Reason+": "+r.Message)))
		case calicoDown != "" && strings.Contains(r.Message, "network"):
			netWait = append(netWait, n.Name)
		default:
			notReady = append(notReady, fmt.Sprintf("%s: %s", n.Name, strings.TrimSpace(r.Reason+": "+r.Message)))
		}
	}
	var out []Check
	add := func(name string, problems []string, pass string) {
		if len(problems) > 0 {
			out = append(out, Check{name, Fail, strings.Join(problems, "; ")})
		} else {
			out = append(out, Check{name, Pass, pass})
		}
	}
	add("nodes registered with their INTERNAL-IPs", missing, fmt.Sprintf("%d nodes", len(cfg.Nodes)-len(missing)))
	add("node roles", roles, "control plane "+cfg.ControlPlane+"; workers schedulable")
	add("kubelet posting status on every node", stopped, "")
	switch {
	case len(notReady) > 0:
		out = append(out, Check{"nodes Ready", Fail, strings.Join(notReady, "; ")})
	case len(netWait) > 0:
		out = append(out, Check{"nodes Ready", Skip, "waiting for the pod network on " + strings.Join(netWait, ", ") + " (" + calicoDown + ")"})
	case len(stopped) > 0:
		out = append(out, Check{"nodes Ready", Fail, "kubelet not reporting (above)"})
	default:
		out = append(out, Check{"nodes Ready", Pass, ""})
	}
	return out
}

func podRunning(p corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if !c.Ready {
			return false
		}
	}
	return true
}

// podState is where a pod stands, with the kubelet's message when one of
// its containers waits: a FAIL line then says why.
func podState(p corev1.Pod) string {
	if w := waiting(p); w != nil && w.Message != "" {
		return w.Reason + " (" + clip(w.Message, 160) + ")"
	}
	return podReason(p)
}

// podReason is podState without the message: a reason to compare, or to
// list for pods that only wait for the pod network.
func podReason(p corev1.Pod) string {
	if w := waiting(p); w != nil {
		return w.Reason
	}
	if p.Status.Phase == "" {
		return "Pending (no kubelet has taken it)"
	}
	// "Running" alone read like a pass in a FAIL line (the
	// reinstalled kube-apiserver failed its readiness probe).
	if p.Status.Phase == corev1.PodRunning {
		for _, cs := range p.Status.ContainerStatuses {
			if !cs.Ready {
				return fmt.Sprintf("Running, %s not ready (%d restarts)", cs.Name, cs.RestartCount)
			}
		}
	}
	return string(p.Status.Phase)
}

func podChecks(cfg *cluster.Config, nodes []corev1.Node, pods []corev1.Pod, calicoDown string) []Check {
	cpName := ""
	for _, n := range nodes {
		if internalIP(n) == cluster.Address(cfg.ControlPlane) {
			cpName = n.Name
		}
	}
	want := []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"}
	if cfg.StackedEtcd() {
		want = append(want, "etcd")
	}
	var cp []string
	for _, c := range want {
		name := c + "-" + cpName
		found := false
		for _, p := range pods {
			if p.Name == name {
				found = true
				if !podRunning(p) {
					cp = append(cp, name+" "+podState(p))
				}
			}
		}
		if !found {
			cp = append(cp, name+" missing")
		}
	}
	var out []Check
	if len(cp) > 0 {
		out = append(out, Check{"control-plane pods Running", Fail, strings.Join(cp, "; ")})
	} else {
		out = append(out, Check{"control-plane pods Running", Pass, strings.Join(want, ", ") + " on " + cpName})
	}
	var bad, waits []string
	for _, p := range pods {
		if podRunning(p) || p.Status.Phase == corev1.PodSucceeded {
			continue
		}
		// Where it is stuck says which node to look at (one
		// kube-proxy stuck in ContainerCreating, its node unnamed).
		on := ""
		if p.Spec.NodeName != "" {
			on = " on " + p.Spec.NodeName
		}
		// Pods on the pod network (and Calico's own) wait for Calico.
		if calicoDown != "" && (!p.Spec.HostNetwork || strings.HasPrefix(p.Name, "calico-")) {
			waits = append(waits, p.Name+" "+podReason(p)+on)
		} else {
			bad = append(bad, p.Name+" "+podState(p)+on)
		}
	}
	sort.Strings(bad)
	sort.Strings(waits)
	switch {
	case len(bad) > 0:
		out = append(out, Check{"kube-system pods Running", Fail, strings.Join(bad, "; ")})
	case len(waits) > 0:
		out = append(out, Check{"kube-system pods Running", Skip, fmt.Sprintf("%d pods wait for the pod network (%s): %s", len(waits), calicoDown, strings.Join(waits, "; "))})
	default:
		out = append(out, Check{"kube-system pods Running", Pass, fmt.Sprintf("%d pods", len(pods))})
	}
	return out
}

func etcdCheck(ctx context.Context, c Cluster) Check {
	name := "etcd members healthy"
	if c.Etcd == nil {
		return Check{name, Skip, "no access to etcd's CA"}
	}
	h, err := c.Etcd(ctx)
	if err != nil {
		return Check{name, Fail, err.Error()}
	}
	return Check{name, Pass, fmt.Sprintf("%d members (%s), leader %s, version %s", len(h.Members), strings.Join(h.Members, ", "), h.Leader, h.Version)}
}

func serviceCheck(ctx context.Context, c Cluster) Check {
	name := "kubernetes Service ClusterIP in the service CIDR"
	svc, err := c.Kube.Kube.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return Check{name, Fail, err.Error()}
	}
	ip, err1 := netip.ParseAddr(svc.Spec.ClusterIP)
	cidr, err2 := netip.ParsePrefix(c.Config.ServiceCIDR)
	if err1 != nil || err2 != nil || !cidr.Contains(ip) {
		return Check{name, Fail, fmt.Sprintf("ClusterIP %s, service CIDR %s", svc.Spec.ClusterIP, c.Config.ServiceCIDR)}
	}
	return Check{name, Pass, fmt.Sprintf("%s in %s", ip, cidr)}
}

func ippoolCheck(ctx context.Context, c Cluster) Check {
	name := "Calico IPPool CIDR = pod CIDR"
	gvr := schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "ippools"}
	list, err := c.Kube.Dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
	if err != nil {
		return Check{name, Fail, err.Error()}
	}
	var cidrs []string
	for _, p := range list.Items {
		cidr, _, _ := unstructured.NestedString(p.Object, "spec", "cidr")
		if cidr == c.Config.PodCIDR {
			return Check{name, Pass, fmt.Sprintf("%s (%s)", cidr, p.GetName())}
		}
		cidrs = append(cidrs, cidr)
	}
	return Check{name, Fail, fmt.Sprintf("pod CIDR %s; IPPools: %v", c.Config.PodCIDR, cidrs)}
}

// clip keeps a kubelet message to one short line of a check's reason.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// waiting is the first waiting container's state (init containers first).
func waiting(p corev1.Pod) *corev1.ContainerStateWaiting {
	for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return w
		}
	}
	return nil
}
