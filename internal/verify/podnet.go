package verify

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/k8slab/k8slab/provision"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// The pod-network checks, in the order they are reported.
const (
	checkDNS       = "CoreDNS resolves kubernetes.default from a pod"
	checkPodToPod  = "pod-to-pod across racks"
	checkInRack    = "pod-to-pod within a rack"
	checkClusterIP = "ClusterIP Service from another node"
	checkPolicy    = "NetworkPolicy: default-deny blocks, allow re-opens"
	checkEgress    = "NetworkPolicy: egress denied but DNS"
)

var podNetworkChecks = []string{checkDNS, checkPodToPod, checkInRack, checkClusterIP, checkPolicy, checkEgress}

// verifyLabel marks verify's namespaces, so a run that was killed before
// it cleaned up is cleaned up by the next one.
const verifyLabel = "k8slab.dev/verify"

// defaultPodTimeout bounds each test pod's wait (start, then verdict):
// emulated nodes take minutes to start a container.
const defaultPodTimeout = 4 * time.Minute

// podNetwork runs the test pods: a server on one node, clients on a node
// in the other rack (another /24, the lab's leaf subnets) and one in the
// server's rack, each a
// k8slab-probe whose exit code is its verdict and whose termination
// message is the reason. Everything lives in its own namespace, deleted
// afterwards. skip, when set, is why none of them can run (Calico down or
// its state unreadable).
func podNetwork(ctx context.Context, kc kubernetes.Interface, nodes []corev1.Node, skip string, timeout time.Duration) []Check {
	all := func(st Status, reason string) []Check {
		var out []Check
		for _, n := range podNetworkChecks {
			out = append(out, Check{n, st, reason})
		}
		return out
	}
	if skip != "" {
		return all(Skip, skip)
	}
	server, across, inRack, why := pickNodes(nodes)
	if why != "" {
		return all(Skip, why)
	}
	// DNS, the ClusterIP and egress are asked from the other rack, or
	// from the server's rack when every node is in it.
	client := across
	if client.Name == "" {
		client = inRack
	}
	p := &probeRun{kc: kc, timeout: timeout}
	defer p.tearDown()
	if err := p.setUp(ctx, server, client); err != nil {
		return all(Fail, err.Error())
	}

	where := func(from corev1.Node) string {
		return fmt.Sprintf("%s (%s) → %s (%s, pod %s)", from.Name, internalIP(from), server.Name, internalIP(server), p.serverIP)
	}
	// A check with no node to run from is skipped, saying why: a pass
	// between two nodes of one rack is no proof of the path across racks.
	checks := map[string]Check{}
	if across.Name == "" {
		checks[checkPodToPod] = Check{checkPodToPod, Skip, fmt.Sprintf("every schedulable Ready node with the test image is in %s's rack (%s)", server.Name, rack(server))}
	}
	if inRack.Name == "" {
		checks[checkInRack] = Check{checkInRack, Skip, fmt.Sprintf("no other schedulable Ready node with the test image in %s's rack (%s)", server.Name, rack(server))}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	// start runs a check beside the others and records its verdict.
	start := func(check func() Check) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := check()
			mu.Lock()
			checks[c.Name] = c
			mu.Unlock()
		}()
	}
	// run runs a client pod on a node; a located check's reason says
	// which node reached which.
	run := func(name, pod string, on corev1.Node, located bool, args ...string) {
		if on.Name == "" {
			return
		}
		start(func() Check {
			ok, reason := p.clientOn(ctx, on.Name, pod, nil, args...)
			c := Check{name, Pass, reason}
			if !ok {
				c.Status = Fail
			}
			if located {
				c = withWhere(c, where(on))
			}
			return c
		})
	}
	// Every check that needs the server open to ingress runs at once: on
	// the emulated VMs a test pod takes 5-7 minutes to start and finish,
	// so each round of pods run one after the other costs that much.
	run(checkDNS, "dns", client, false, "resolve", "kubernetes.default")
	run(checkClusterIP, "cluster-ip", client, true, "get", p.svcURL)
	run(checkPodToPod, "pod-to-pod", across, true, "get", p.podURL)
	run(checkInRack, "in-rack", inRack, true, "get", p.podURL)
	start(func() Check { return withWhere(p.egress(ctx), client.Name) })
	wg.Wait()
	// The ingress policies close the server to every client, so they
	// come last.
	checks[checkPolicy] = p.policy(ctx)

	var out []Check
	for _, n := range podNetworkChecks {
		out = append(out, checks[n])
	}
	return out
}

func withWhere(c Check, where string) Check {
	c.Reason = where + ": " + c.Reason
	return c
}

// pickNodes chooses a server node, a node in another /24 (across: the
// reference lab's racks are the leaves' /24s) and one in the server's own
// (inRack), among schedulable Ready nodes that have the probe image;
// either is zero when there is none, never both.
func pickNodes(nodes []corev1.Node) (server, across, inRack corev1.Node, why string) {
	var usable []corev1.Node
	var noImage []string
	for _, n := range nodes {
		if n.Spec.Unschedulable || ready(n).Status != corev1.ConditionTrue {
			continue
		}
		if !hasImage(n, provision.ProbeImage) {
			noImage = append(noImage, n.Name)
			continue
		}
		usable = append(usable, n)
	}
	sort.Slice(usable, func(i, j int) bool { return internalIP(usable[i]) < internalIP(usable[j]) })
	if len(noImage) > 0 && len(usable) < 2 {
		return server, across, inRack, fmt.Sprintf("test image %s not on %s (it comes with a bundle built by make bundle)", provision.ProbeImage, strings.Join(noImage, ", "))
	}
	if len(usable) < 2 {
		return server, across, inRack, "fewer than two schedulable Ready nodes"
	}
	server = usable[0]
	// The first other node of each kind, by address.
	for _, n := range usable[1:] {
		switch {
		case rack(n) != rack(server) && across.Name == "":
			across = n
		case rack(n) == rack(server) && inRack.Name == "":
			inRack = n
		}
	}
	return server, across, inRack, ""
}

func rack(n corev1.Node) netip.Prefix {
	a, err := netip.ParseAddr(internalIP(n))
	if err != nil {
		return netip.Prefix{}
	}
	p, _ := a.Prefix(24)
	return p
}

func hasImage(n corev1.Node, ref string) bool {
	for _, img := range n.Status.Images {
		for _, name := range img.Names {
			if name == ref {
				return true
			}
		}
	}
	return false
}

// probeRun is one verify's test namespace and server.
type probeRun struct {
	kc             kubernetes.Interface
	timeout        time.Duration
	ns             string
	clientNode     string
	podURL, svcURL string
	serverIP       string
}

const (
	probePort   = 8080
	serverLabel = "k8slab-probe-server"
	clientLabel = "k8slab-probe-client"
)

func (p *probeRun) setUp(ctx context.Context, server, client corev1.Node) error {
	p.clientNode = client.Name
	nss := p.kc.CoreV1().Namespaces()
	// A killed earlier verify left its namespace: remove it (verify takes
	// no lock, so one younger than any verify lasts may still be in use).
	old, err := nss.List(ctx, metav1.ListOptions{LabelSelector: verifyLabel})
	if err != nil {
		return fmt.Errorf("listing earlier test namespaces: %w", err)
	}
	for _, ns := range old.Items {
		if time.Since(ns.CreationTimestamp.Time) > 5*p.timeout {
			nss.Delete(ctx, ns.Name, metav1.DeleteOptions{})
		}
	}
	ns, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: "k8slab-verify-", Labels: map[string]string{verifyLabel: "true"}}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the test namespace: %w", err)
	}
	p.ns = ns.Name
	pod := probePod("server", server.Name, []string{"serve", "-port", fmt.Sprint(probePort)}, map[string]string{"app": serverLabel})
	pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: probePort}}
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(probePort)}},
		PeriodSeconds: 2, TimeoutSeconds: 5,
	}
	if _, err := p.kc.CoreV1().Pods(p.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the server pod: %w", err)
	}
	svc, err := p.kc.CoreV1().Services(p.ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "probe"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": serverLabel},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(probePort)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the test Service: %w", err)
	}
	p.svcURL = "http://" + svc.Spec.ClusterIP + "/"
	up, err := p.wait(ctx, "server", func(pod *corev1.Pod) bool { return podRunning(*pod) && pod.Status.PodIP != "" })
	if err != nil {
		return fmt.Errorf("test server pod on %s: %w", server.Name, err)
	}
	p.serverIP = up.Status.PodIP
	p.podURL = fmt.Sprintf("http://%s:%d/", up.Status.PodIP, probePort)
	return nil
}

// tearDown deletes the namespace without waiting: the next verify
// removes it if this deletion does not finish.
func (p *probeRun) tearDown() {
	if p.ns == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.kc.CoreV1().Namespaces().Delete(ctx, p.ns, metav1.DeleteOptions{})
}

func probePod(name, node string, args []string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "probe", Image: provision.ProbeImage, Args: args,
				// Offline labs have no registry to pull from: a node without
				// the image must say so at once.
				ImagePullPolicy: corev1.PullNever,
			}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		},
	}
}

// client runs one probe pod on the client node and returns its verdict
// and reason (its termination message).
func (p *probeRun) client(ctx context.Context, podName string, args ...string) (bool, string) {
	return p.clientOn(ctx, p.clientNode, podName, nil, args...)
}

// clientOn is client on any node, with labels added to the client's.
func (p *probeRun) clientOn(ctx context.Context, node, podName string, labels map[string]string, args ...string) (bool, string) {
	args = append(args[:1:1], append([]string{"-message", "/dev/termination-log"}, args[1:]...)...)
	l := map[string]string{"app": clientLabel}
	for k, v := range labels {
		l[k] = v
	}
	pod := probePod(podName, node, args, l)
	if _, err := p.kc.CoreV1().Pods(p.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return false, fmt.Sprintf("creating the test pod: %v", err)
	}
	done, err := p.wait(ctx, podName, func(pod *corev1.Pod) bool {
		return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	})
	if err != nil {
		return false, fmt.Sprintf("test pod on %s: %v", node, err)
	}
	reason := string(done.Status.Phase)
	for _, cs := range done.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.Message != "" {
			reason = strings.TrimSpace(t.Message)
		}
	}
	return done.Status.Phase == corev1.PodSucceeded, reason
}

// policy: a default-deny ingress policy must make the server unreachable
// for the client, and an allow rule for the client must re-open it.
func (p *probeRun) policy(ctx context.Context) Check {
	np := p.kc.NetworkingV1().NetworkPolicies(p.ns)
	deny := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "default-deny"},
		Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	}
	if _, err := np.Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		return Check{checkPolicy, Fail, "creating default-deny: " + err.Error()}
	}
	if ok, reason := p.client(ctx, "policy-deny", "get", "-want", "unreachable", p.podURL); !ok {
		return Check{checkPolicy, Fail, "default-deny did not block the client: " + reason}
	}
	port := intstr.FromInt32(probePort)
	allow := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-client"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": serverLabel}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": clientLabel}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
			}},
		},
	}
	if _, err := np.Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		return Check{checkPolicy, Fail, "creating the allow rule: " + err.Error()}
	}
	if ok, reason := p.client(ctx, "policy-allow", "get", p.podURL); !ok {
		return Check{checkPolicy, Fail, "blocked by default-deny as it should be, but the allow rule did not re-open: " + reason}
	}
	return Check{checkPolicy, Pass, "default-deny blocked the client; the allow rule re-opened it"}
}

// egressLabel marks the client pods the egress policy selects. They are
// clients too, so the ingress rule still admits them at the server: only
// their own egress policy can block them.
const egressLabel = "k8slab.dev/egress"

// egress: a policy denying a pod every egress but DNS must block its
// connection to the server and still let it resolve names.
func (p *probeRun) egress(ctx context.Context) Check {
	dns := []networkingv1.NetworkPolicyPort{{Protocol: ptr(corev1.ProtocolUDP), Port: ptr(intstr.FromInt32(53))}, {Protocol: ptr(corev1.ProtocolTCP), Port: ptr(intstr.FromInt32(53))}}
	pol := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "egress-dns-only"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{egressLabel: "dns-only"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{Ports: dns}},
		},
	}
	if _, err := p.kc.NetworkingV1().NetworkPolicies(p.ns).Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		return Check{checkEgress, Fail, "creating the egress policy: " + err.Error()}
	}
	labels := map[string]string{egressLabel: "dns-only"}
	var blocked, resolved bool
	var blockedWhy, resolvedWhy string
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		blocked, blockedWhy = p.clientOn(ctx, p.clientNode, "egress-blocked", labels, "get", "-want", "unreachable", p.podURL)
	}()
	go func() {
		defer wg.Done()
		resolved, resolvedWhy = p.clientOn(ctx, p.clientNode, "egress-dns", labels, "resolve", "kubernetes.default")
	}()
	wg.Wait()
	if !blocked {
		return Check{checkEgress, Fail, "the egress policy did not block the pod: " + blockedWhy}
	}
	if !resolved {
		return Check{checkEgress, Fail, "blocked the server as it should, but DNS too, which it allows: " + resolvedWhy}
	}
	return Check{checkEgress, Pass, "a pod denied all egress but DNS could not reach the server, and still resolved kubernetes.default"}
}

func ptr[T any](v T) *T { return &v }

// wait polls a pod until cond holds; on timeout it says what the pod is
// doing (ErrImageNeverPull, ContainerCreating, ...).
func (p *probeRun) wait(ctx context.Context, name string, cond func(*corev1.Pod) bool) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	poll := min(time.Second, p.timeout/20)
	var last *corev1.Pod
	for {
		pod, err := p.kc.CoreV1().Pods(p.ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			last = pod
			if cond(pod) {
				return pod, nil
			}
			if st := podReason(*pod); st == "ErrImageNeverPull" || st == "InvalidImageName" {
				return nil, fmt.Errorf("%s: %s", st, provision.ProbeImage)
			}
		case !apierrors.IsNotFound(err) && ctx.Err() == nil:
			return nil, err
		}
		select {
		case <-ctx.Done():
			if last == nil {
				return nil, fmt.Errorf("pod %s not found after %s", name, p.timeout)
			}
			return nil, fmt.Errorf("still %s after %s", podState(*last), p.timeout)
		case <-time.After(poll):
		}
	}
}
