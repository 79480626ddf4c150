package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/k8slab/k8slab/calico"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const checkBGP = "BGP: every node Established with its rack's router, no node-to-node mesh"

var nodeStatusGVR = schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "caliconodestatuses"}

// bgpCheck asks calico-node on every node for its BGP sessions through
// CalicoNodeStatus objects (calico-node fills their status; verify needs
// no login to the nodes) and judges them against the node's rack: one
// session, Established, with the rack's router, and no mesh session. It
// waits up to wait for the reports, and for sessions that are still
// coming up.
func bgpCheck(ctx context.Context, c Cluster, nodes []corev1.Node, wait, every time.Duration) Check {
	racks := map[string]calico.Rack{}
	for _, r := range c.Config.Calico.Racks {
		racks[r.Name] = calico.Rack{Name: r.Name, Router: r.Router, ASN: r.ASN}
	}
	res := c.Kube.Dyn.Resource(nodeStatusGVR)
	name := func(n corev1.Node) string { return "k8slab-verify-" + n.Name }
	for _, n := range nodes {
		obj := calico.CalicoNodeStatus{
			TypeMeta: calico.TypeMeta{APIVersion: calico.CRDGroupVersion, Kind: "CalicoNodeStatus"},
			Metadata: calico.ObjectMeta{Name: name(n), Labels: map[string]string{verifyLabel: "true"}},
			Spec:     calico.CalicoNodeStatusSpec{Node: n.Name, Classes: []string{"BGP"}, UpdatePeriodSeconds: 5},
		}
		u, err := toUnstructured(obj)
		if err != nil {
			return Check{checkBGP, Fail, err.Error()}
		}
		res.Delete(ctx, name(n), metav1.DeleteOptions{})
		if _, err := res.Create(ctx, u, metav1.CreateOptions{}); err != nil {
			return Check{checkBGP, Fail, fmt.Sprintf("creating CalicoNodeStatus for %s: %v", n.Name, err)}
		}
		defer res.Delete(context.WithoutCancel(ctx), name(n), metav1.DeleteOptions{})
	}
	deadline := time.Now().Add(wait)
	for {
		var problems, good []string
		for _, n := range nodes {
			r, ok := racks[n.Labels[calico.ZoneLabel]]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: no rack (label %s=%q)", n.Name, calico.ZoneLabel, n.Labels[calico.ZoneLabel]))
				continue
			}
			u, err := res.Get(ctx, name(n), metav1.GetOptions{})
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", n.Name, err))
				continue
			}
			var st calico.CalicoNodeStatus
			b, _ := json.Marshal(u.Object)
			json.Unmarshal(b, &st)
			if st.Status == nil || st.Status.LastUpdated == "" {
				problems = append(problems, n.Name+": calico-node has not reported its BGP sessions")
				continue
			}
			if p := calico.PeeringProblems(n.Name, r, st.Status.BGP.PeersV4); p != "" {
				problems = append(problems, p)
				continue
			}
			good = append(good, fmt.Sprintf("%s↔%s", n.Name, r.Router))
		}
		if len(problems) == 0 {
			sort.Strings(good)
			return Check{checkBGP, Pass, fmt.Sprintf("%d nodes (iBGP, AS per rack): %s", len(good), strings.Join(good, ", "))}
		}
		if time.Now().After(deadline) {
			sort.Strings(problems)
			return Check{checkBGP, Fail, strings.Join(problems, "; ")}
		}
		if err := sleep(ctx, every); err != nil {
			return Check{checkBGP, Fail, err.Error()}
		}
	}
}

func toUnstructured(obj any) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}
