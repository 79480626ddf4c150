package verify

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/kube"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

// calicoNodeAnswering is a dynamic client whose CalicoNodeStatus objects
// get the status a calico-node would write for their node.
func calicoNodeAnswering(peers map[string][]calico.BGPPeerState) *dynfake.FakeDynamicClient {
	dc := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{{Group: "crd.projectcalico.org", Version: "v1", Resource: "caliconodestatuses"}: "CalicoNodeStatusList"})
	dc.PrependReactor("create", "caliconodestatuses", func(a k8stesting.Action) (bool, runtime.Object, error) {
		u := a.(k8stesting.CreateAction).GetObject().(*unstructured.Unstructured)
		node, _, _ := unstructured.NestedString(u.Object, "spec", "node")
		if ps, ok := peers[node]; ok {
			var list []any
			for _, p := range ps {
				list = append(list, map[string]any{"peerIP": p.PeerIP, "state": p.State, "type": p.Type})
			}
			u.Object["status"] = map[string]any{"lastUpdated": "2026-12-05T19:00:00Z", "bgp": map[string]any{"peersV4": list}}
		}
		return false, nil, nil
	})
	return dc
}

func rackNode(name, rack string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	if rack != "" {
		n.Labels[calico.ZoneLabel] = rack
	}
	return n
}

func TestBGPCheck(t *testing.T) {
	cfg := &cluster.Config{Calico: cluster.Calico{BGP: cluster.BGPAsPerRack, Racks: []cluster.Rack{
		{Name: "leaf1", Router: "172.31.3.1", ASN: 65001}, {Name: "leaf2", Router: "172.31.4.1", ASN: 65002}}}}
	nodes := []corev1.Node{rackNode("kube-node1", "leaf1"), rackNode("kube-node3", "leaf2")}
	est := func(ip string) calico.BGPPeerState {
		return calico.BGPPeerState{PeerIP: ip, State: "Established", Type: "GlobalPeer"}
	}
	tests := []struct {
		name   string
		nodes  []corev1.Node
		peers  map[string][]calico.BGPPeerState
		status Status
		reason string
	}{
		{"both Established with their racks' routers", nodes,
			map[string][]calico.BGPPeerState{"kube-node1": {est("172.31.3.1")}, "kube-node3": {est("172.31.4.1")}},
			Pass, "kube-node1↔172.31.3.1, kube-node3↔172.31.4.1"},
		{"a session still Active", nodes,
			map[string][]calico.BGPPeerState{"kube-node1": {est("172.31.3.1")}, "kube-node3": {{PeerIP: "172.31.4.1", State: "Active", Type: "GlobalPeer"}}},
			Fail, "kube-node3: BGP with 172.31.4.1 (AS65002) Active"},
		{"the node-to-node mesh is still on", nodes,
			map[string][]calico.BGPPeerState{"kube-node1": {est("172.31.3.1"), {PeerIP: "172.31.4.11", State: "Established", Type: "NodeMesh"}}, "kube-node3": {est("172.31.4.1")}},
			Fail, "kube-node1: a node-to-node mesh session with 172.31.4.11"},
		{"peered with the other rack's router", nodes,
			map[string][]calico.BGPPeerState{"kube-node1": {est("172.31.4.1")}, "kube-node3": {est("172.31.4.1")}},
			Fail, "kube-node1: an unexpected session with 172.31.4.1 (GlobalPeer, Established); no BGP session with its rack's router 172.31.3.1 (AS65001)"},
		{"calico-node never reports", nodes,
			map[string][]calico.BGPPeerState{"kube-node1": {est("172.31.3.1")}},
			Fail, "kube-node3: calico-node has not reported its BGP sessions"},
		{"a node without its rack label", []corev1.Node{rackNode("kube-node1", "leaf1"), rackNode("kube-node3", "")},
			map[string][]calico.BGPPeerState{"kube-node1": {est("172.31.3.1")}, "kube-node3": {est("172.31.4.1")}},
			Fail, `kube-node3: no rack (label topology.kubernetes.io/zone="")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dc := calicoNodeAnswering(tt.peers)
			c := Cluster{Config: cfg, Kube: &kube.Client{Dyn: dc}}
			got := bgpCheck(context.Background(), c, tt.nodes, 30*time.Millisecond, 10*time.Millisecond)
			if got.Status != tt.status || !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("%s: %s, want %s containing %q", got.Status, got.Reason, tt.status, tt.reason)
			}
			left, err := dc.Resource(schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "caliconodestatuses"}).List(context.Background(), metav1.ListOptions{})
			if err != nil || len(left.Items) != 0 {
				t.Errorf("CalicoNodeStatus objects left behind: %v %v", left, err)
			}
		})
	}
}
