package verify

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/k8slab/k8slab/calico"
	corev1 "k8s.io/api/core/v1"
)

const checkBGP = "BGP: every node Established with its rack's router, no node-to-node mesh"

// bgpCheck asks calico-node on every node for its BGP sessions (through
// CalicoNodeStatus objects: no login to the nodes) and judges them
// against the node's rack: one session, Established, with the rack's
// router, and no mesh session. It waits up to wait for the reports, and
// for sessions that are still coming up.
func bgpCheck(ctx context.Context, c Cluster, nodes []corev1.Node, wait, every time.Duration) Check {
	racks := map[string]calico.Rack{}
	for _, r := range c.Config.Calico.Racks {
		racks[r.Name] = calico.Rack{Name: r.Name, Router: r.Router, ASN: r.ASN}
	}
	var names []string
	var unracked []string
	rackOf := map[string]calico.Rack{}
	for _, n := range nodes {
		names = append(names, n.Name)
		if r, ok := racks[n.Labels[calico.ZoneLabel]]; ok {
			rackOf[n.Name] = r
		} else {
			unracked = append(unracked, fmt.Sprintf("%s: no rack (label %s=%q)", n.Name, calico.ZoneLabel, n.Labels[calico.ZoneLabel]))
		}
	}
	reader, err := calico.NewPeerReader(ctx, c.Kube.Dyn, "k8slab-verify", names)
	if err != nil {
		return Check{checkBGP, Fail, err.Error()}
	}
	defer reader.Close(ctx)
	deadline := time.Now().Add(wait)
	for {
		problems, good := reader.RackProblems(ctx, rackOf)
		problems = append(unracked, problems...)
		if len(problems) == 0 {
			return Check{checkBGP, Pass, fmt.Sprintf("%d nodes (iBGP, AS per rack): %s", len(good), strings.Join(good, ", "))}
		}
		if time.Now().After(deadline) {
			return Check{checkBGP, Fail, strings.Join(problems, "; ")}
		}
		if err := sleep(ctx, every); err != nil {
			return Check{checkBGP, Fail, err.Error()}
		}
	}
}
