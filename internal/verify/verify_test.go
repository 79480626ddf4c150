package verify

import (
	"strings"
	"testing"

	"github.com/k8slab/k8slab/internal/cluster"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func labConfig() *cluster.Config {
	c := &cluster.Config{Nodes: []string{"172.31.3.11", "172.31.3.12", "172.31.4.11", "172.31.4.12"},
		ServiceCIDR: "172.31.64.0/18", PodCIDR: "172.31.128.0/18"}
	c.Default()
	return c
}

const noCNI = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"

func node(name, ip string, cp bool, st corev1.ConditionStatus, msg string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	if cp {
		n.Labels["node-role.kubernetes.io/control-plane"] = ""
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	reason := "KubeletReady"
	if st == corev1.ConditionFalse {
		reason = "KubeletNotReady"
	} else if st == corev1.ConditionUnknown {
		reason = "NodeStatusUnknown"
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st, Reason: reason, Message: msg}}
	return n
}

func labNodes(st corev1.ConditionStatus, msg string) []corev1.Node {
	return []corev1.Node{
		node("kube-node1", "172.31.3.11", true, st, msg), node("kube-node2", "172.31.3.12", false, st, msg),
		node("kube-node3", "172.31.4.11", false, st, msg), node("kube-node4", "172.31.4.12", false, st, msg),
	}
}

func TestNodeChecks(t *testing.T) {
	calicoDown := "calico-node not running: ErrImagePull quay.io/calico/cni:v3.32.1 on kube-node1"
	cases := []struct {
		name       string
		nodes      func() []corev1.Node
		calicoDown string
		want       map[string]Status
		reason     string
	}{
		{"healthy", func() []corev1.Node { return labNodes(corev1.ConditionTrue, "") }, "",
			map[string]Status{"nodes registered with their INTERNAL-IPs": Pass, "node roles": Pass, "kubelet posting status on every node": Pass, "nodes Ready": Pass}, ""},
		{"offline lab: NotReady for want of Calico is SKIP, not PASS", func() []corev1.Node { return labNodes(corev1.ConditionFalse, noCNI) }, calicoDown,
			map[string]Status{"nodes Ready": Skip, "kubelet posting status on every node": Pass}, "ErrImagePull quay.io/calico/cni"},
		{"no CNI although Calico runs: FAIL", func() []corev1.Node { return labNodes(corev1.ConditionFalse, noCNI) }, "",
			map[string]Status{"nodes Ready": Fail}, "cni plugin not initialized"},
		{"kubelet stopped on kube-node3: FAIL naming it", func() []corev1.Node {
			n := labNodes(corev1.ConditionFalse, noCNI)
			n[2] = node("kube-node3", "172.31.4.11", false, corev1.ConditionUnknown, "Kubelet stopped posting node status.")
			return n
		}, calicoDown, map[string]Status{"kubelet posting status on every node": Fail, "nodes Ready": Skip}, "kube-node3 (172.31.4.11): NodeStatusUnknown"},
		{"a node missing", func() []corev1.Node { return labNodes(corev1.ConditionTrue, "")[:3] }, "",
			map[string]Status{"nodes registered with their INTERNAL-IPs": Fail}, "172.31.4.12: no Kubernetes node"},
		{"control plane still tainted although a worker", func() []corev1.Node {
			n := labNodes(corev1.ConditionTrue, "")
			n[0].Spec.Taints = []corev1.Taint{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}}
			return n
		}, "", map[string]Status{"node roles": Fail}, "tainted NoSchedule"},
		{"the install's pod-network taint left on a node", func() []corev1.Node {
			n := labNodes(corev1.ConditionTrue, "")
			n[2].Spec.Taints = []corev1.Taint{{Key: "k8slab.dev/pod-network-unavailable", Effect: corev1.TaintEffectNoSchedule}}
			return n
		}, "", map[string]Status{"node roles": Fail}, "kube-node3: still tainted k8slab.dev/pod-network-unavailable:NoSchedule"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checks := nodeChecks(labConfig(), c.nodes(), c.calicoDown)
			all := ""
			for _, ch := range checks {
				all += string(ch.Status) + " " + ch.Name + ": " + ch.Reason + "\n"
				if want, ok := c.want[ch.Name]; ok && ch.Status != want {
					t.Errorf("%s: %s (%s), want %s", ch.Name, ch.Status, ch.Reason, want)
				}
			}
			if !strings.Contains(all, c.reason) {
				t.Errorf("no check says %q:\n%s", c.reason, all)
			}
		})
	}
}

func pod(name string, hostNet bool, phase corev1.PodPhase, waiting string) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
	p.Spec.HostNetwork = hostNet
	p.Status.Phase = phase
	cs := corev1.ContainerStatus{Ready: phase == corev1.PodRunning}
	if waiting != "" {
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: waiting}
	}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
	return p
}

func TestPodChecks(t *testing.T) {
	cp := []corev1.Pod{
		pod("kube-apiserver-kube-node1", true, corev1.PodRunning, ""),
		pod("kube-controller-manager-kube-node1", true, corev1.PodRunning, ""),
		pod("kube-scheduler-kube-node1", true, corev1.PodRunning, ""),
		pod("kube-proxy-abcde", true, corev1.PodRunning, ""),
	}
	offline := append(append([]corev1.Pod{}, cp...),
		pod("coredns-1", false, corev1.PodPending, ""),
		pod("calico-node-x", true, corev1.PodPending, "ErrImagePull"))
	crashing := append(append([]corev1.Pod{}, cp...), pod("kube-proxy-zzz", true, corev1.PodRunning, "CrashLoopBackOff"))
	crashing[len(crashing)-1].Status.ContainerStatuses[0].Ready = false
	stuck := append(append([]corev1.Pod{}, cp...), pod("kube-proxy-j7k4r", true, corev1.PodPending, "ContainerCreating"))
	stuck[len(stuck)-1].Spec.NodeName = "kube-node2"
	crashing[len(crashing)-1].Spec.NodeName = "kube-node3"
	crashing[len(crashing)-1].Status.ContainerStatuses[0].State.Waiting.Message = "back-off 40s restarting failed container=kube-proxy\n pod=kube-proxy-zzz"
	notReady := append([]corev1.Pod{}, cp...)
	notReady[0] = pod("kube-apiserver-kube-node1", true, corev1.PodRunning, "")
	notReady[0].Status.ContainerStatuses[0].Ready = false
	notReady[0].Status.ContainerStatuses[0].Name = "kube-apiserver"
	cases := []struct {
		name       string
		pods       []corev1.Pod
		calicoDown string
		cp, sys    Status
		reason     string
		sysReason  string
	}{
		{"a running kube-apiserver that is not ready", notReady, "", Fail, Fail, "kube-apiserver-kube-node1 Running, kube-apiserver not ready (0 restarts)", ""},
		{"healthy", cp, "", Pass, Pass, "", ""},
		{"offline lab: pod-network pods wait for Calico", offline, "calico-node not running", Pass, Skip, "", ""},
		{"the same pods with Calico running: FAIL", offline, "", Pass, Fail, "", ""},
		{"a host-network pod crashing is a failure even offline", crashing, "calico-node not running", Pass, Fail, "",
			"kube-proxy-zzz CrashLoopBackOff (back-off 40s restarting failed container=kube-proxy pod=kube-proxy-zzz) on kube-node3"},
		{"a pod stuck creating names its node", stuck, "calico-node not running", Pass, Fail, "", "kube-proxy-j7k4r ContainerCreating on kube-node2"},
		{"scheduler missing", cp[:2], "", Fail, Pass, "kube-scheduler", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checks := podChecks(labConfig(), labNodes(corev1.ConditionTrue, ""), c.pods, c.calicoDown)
			if checks[0].Status != c.cp || checks[1].Status != c.sys || !strings.Contains(checks[0].Reason, c.reason) || !strings.Contains(checks[1].Reason, c.sysReason) {
				t.Errorf("got %+v, want control plane %s (%q), kube-system %s (%q)", checks, c.cp, c.reason, c.sys, c.sysReason)
			}
		})
	}
}
