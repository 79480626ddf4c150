package calico

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// Peering: Calico's "AS per rack" model of an L3 interconnect fabric. Each
// rack's top-of-rack router and the nodes behind it form one AS; every node
// has one iBGP session, to its router, which reflects routes between the
// rack's nodes and carries them to the rest of the fabric over eBGP. The
// node-to-node mesh is off and pods are routed without encapsulation.

const (
	// ZoneLabel is the standard topology label: a node's rack. kubelets
	// may set it themselves, schedulers and users already read it.
	ZoneLabel = "topology.kubernetes.io/zone"
	// ASNAnnotation is where Calico's Kubernetes datastore keeps a node's
	// own AS number (libcalico-go's node conversion reads it into the
	// Calico Node's spec.bgp.asNumber).
	ASNAnnotation = "projectcalico.org/ASNumber"
)

// Rack is a top-of-rack router and the AS its nodes share with it.
type Rack struct {
	Name   string
	Router string
	ASN    uint32
}

// BGPPeer is a BGP session Calico's BIRD opens, for the nodes it selects.
type BGPPeer struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta  `json:"metadata"`
	Spec     BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec holds the fields k8slab sets.
type BGPPeerSpec struct {
	NodeSelector string `json:"nodeSelector,omitempty"`
	PeerIP       string `json:"peerIP"`
	ASNumber     uint32 `json:"asNumber"`
}

// CalicoNodeStatus asks calico-node to report its BGP sessions into the
// datastore: what verify reads instead of logging into every node.
type CalicoNodeStatus struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta              `json:"metadata"`
	Spec     CalicoNodeStatusSpec    `json:"spec"`
	Status   *CalicoNodeStatusStatus `json:"status,omitempty"`
}

// CalicoNodeStatusSpec names the node and what to report.
type CalicoNodeStatusSpec struct {
	Node                string   `json:"node"`
	Classes             []string `json:"classes"`
	UpdatePeriodSeconds int      `json:"updatePeriodSeconds"`
}

// CalicoNodeStatusStatus is what calico-node wrote.
type CalicoNodeStatusStatus struct {
	LastUpdated string `json:"lastUpdated,omitempty"`
	BGP         struct {
		PeersV4 []BGPPeerState `json:"peersV4,omitempty"`
	} `json:"bgp"`
}

// BGPPeerState is one session as calico-node's BIRD sees it.
type BGPPeerState struct {
	PeerIP string `json:"peerIP"`
	State  string `json:"state"`
	// Type is NodeMesh, NodePeer or GlobalPeer.
	Type  string `json:"type"`
	Since string `json:"since,omitempty"`
}

// PeerName is the BGPPeer object of one rack.
func PeerName(rack string) string { return "k8slab-rack-" + rack }

// Peers returns one BGPPeer per rack: its nodes (by zone label) peer with
// its router, in the rack's AS.
func Peers(racks []Rack) []BGPPeer {
	var out []BGPPeer
	for _, r := range racks {
		out = append(out, BGPPeer{
			TypeMeta: TypeMeta{APIVersion: CRDGroupVersion, Kind: "BGPPeer"},
			Metadata: ObjectMeta{Name: PeerName(r.Name)},
			Spec:     BGPPeerSpec{NodeSelector: fmt.Sprintf("%s == '%s'", ZoneLabel, r.Name), PeerIP: r.Router, ASNumber: r.ASN},
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Metadata.Name < out[j].Metadata.Name })
	return out
}

// NodePatch is the merge patch that puts a node into its rack: the zone
// label the rack's BGPPeer selects and the rack's AS number.
func NodePatch(r Rack) map[string]any {
	return map[string]any{"metadata": map[string]any{
		"labels":      map[string]string{ZoneLabel: r.Name},
		"annotations": map[string]string{ASNAnnotation: strconv.FormatUint(uint64(r.ASN), 10)},
	}}
}

// PeeringProblems judges one node's sessions as calico-node reported them:
// Established with its rack's router, and no node-to-node mesh. It returns
// "" when the node is peered as it should be.
func PeeringProblems(node string, r Rack, peers []BGPPeerState) string {
	var problem string
	found := false
	for _, p := range peers {
		switch {
		case p.Type == "NodeMesh":
			problem += fmt.Sprintf("; a node-to-node mesh session with %s (%s)", p.PeerIP, p.State)
		case p.PeerIP == r.Router:
			found = true
			if p.State != "Established" {
				problem += fmt.Sprintf("; BGP with %s (AS%d) %s", r.Router, r.ASN, p.State)
			}
		default:
			problem += fmt.Sprintf("; an unexpected session with %s (%s, %s)", p.PeerIP, p.Type, p.State)
		}
	}
	if !found {
		problem += fmt.Sprintf("; no BGP session with its rack's router %s (AS%d)", r.Router, r.ASN)
	}
	if problem == "" {
		return ""
	}
	return node + ":" + problem[1:]
}

var nodeStatusGVR = schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "caliconodestatuses"}

// PeerReader asks calico-node on each node for its BGP sessions: one
// CalicoNodeStatus per node, which calico-node fills every few seconds
// (no login to the nodes). Close deletes them.
type PeerReader struct {
	res   dynamic.NamespaceableResourceInterface
	names map[string]string // node -> object
}

// NewPeerReader creates the status objects for nodes; prefix names them
// after their user ("k8slab-verify", "k8slab-rollout").
func NewPeerReader(ctx context.Context, dyn dynamic.Interface, prefix string, nodes []string) (*PeerReader, error) {
	p := &PeerReader{res: dyn.Resource(nodeStatusGVR), names: map[string]string{}}
	for _, n := range nodes {
		name := prefix + "-" + n
		obj := CalicoNodeStatus{
			TypeMeta: TypeMeta{APIVersion: CRDGroupVersion, Kind: "CalicoNodeStatus"},
			Metadata: ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "k8slab"}},
			Spec:     CalicoNodeStatusSpec{Node: n, Classes: []string{"BGP"}, UpdatePeriodSeconds: 5},
		}
		b, _ := json.Marshal(obj)
		var m map[string]any
		json.Unmarshal(b, &m)
		p.res.Delete(ctx, name, metav1.DeleteOptions{}) // a leftover of a killed run
		if _, err := p.res.Create(ctx, &unstructured.Unstructured{Object: m}, metav1.CreateOptions{}); err != nil {
			p.Close(ctx)
			return nil, fmt.Errorf("creating CalicoNodeStatus for %s: %w", n, err)
		}
		p.names[n] = name
	}
	return p, nil
}

// Peers returns a node's sessions as last reported; ok is false while
// calico-node has not reported yet.
func (p *PeerReader) Peers(ctx context.Context, node string) (peers []BGPPeerState, ok bool, err error) {
	u, err := p.res.Get(ctx, p.names[node], metav1.GetOptions{})
	if err != nil {
		return nil, false, err
	}
	var st CalicoNodeStatus
	b, _ := json.Marshal(u.Object)
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, false, err
	}
	if st.Status == nil || st.Status.LastUpdated == "" {
		return nil, false, nil
	}
	return st.Status.BGP.PeersV4, true, nil
}

// Close deletes the status objects (also when ctx has ended).
func (p *PeerReader) Close(ctx context.Context) {
	for _, name := range p.names {
		p.res.Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{})
	}
}

// RackProblems reads every node's sessions once and judges them against
// its rack (PeeringProblems); nodes maps node name to rack. It returns
// the problems and the nodes peered as they should be.
func (p *PeerReader) RackProblems(ctx context.Context, nodes map[string]Rack) (problems, good []string) {
	for node, r := range nodes {
		peers, ok, err := p.Peers(ctx, node)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", node, err))
		case !ok:
			problems = append(problems, node+": calico-node has not reported its BGP sessions")
		default:
			if pr := PeeringProblems(node, r, peers); pr != "" {
				problems = append(problems, pr)
			} else {
				good = append(good, fmt.Sprintf("%s↔%s", node, r.Router))
			}
		}
	}
	sort.Strings(problems)
	sort.Strings(good)
	return problems, good
}
