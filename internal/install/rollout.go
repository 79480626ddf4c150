package install

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/phase"
)

// Rollout waits, once every node has joined, for calico-node on every node
// and every node Ready; without --wait it reports where they are and goes
// on. Apart from the calico phase because that one runs before the joins.
type Rollout struct{ *Context }

func (*Rollout) Name() string { return "rollout" }

// RolloutIncomplete means everything was applied but calico-node or the
// nodes did not become ready in time; Nodes says why, per node.
type RolloutIncomplete struct {
	Nodes []calico.NodeReport
	Wait  time.Duration
}

func (e *RolloutIncomplete) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Calico did not become ready within %s:", e.Wait)
	for _, n := range e.Nodes {
		fmt.Fprintf(&b, "\n  %s: calico-node %s", n.Node, n.Calico)
		if !n.Ready {
			fmt.Fprintf(&b, "; node NotReady (%s)", n.Problem)
		}
	}
	return b.String()
}

func (r *Rollout) Plan() []phase.Step {
	if !r.WaitRollout {
		return []phase.Step{{Action: "report calico-node and node readiness (--wait=false: not waiting)"}}
	}
	return []phase.Step{{Action: fmt.Sprintf("wait up to %s for calico-node on every node and every node Ready", r.Wait)}}
}

func (r *Rollout) Run(ctx context.Context) error {
	cl, err := r.kubeClient()
	if err != nil {
		return err
	}
	status := r.Runner.StatusWriter()
	if !r.WaitRollout {
		reports, desired, _, err := calico.Rollout(ctx, cl.Kube)
		if err == nil {
			fmt.Fprintf(status, "rollout: not waiting (--wait=false): calico-node desired on %d nodes\n", desired)
			for _, n := range reports {
				fmt.Fprintf(status, "  %s: calico-node %s, ready %v\n", n.Node, n.Calico, n.Ready)
			}
		}
		return err
	}
	deadline := time.Now().Add(r.Wait)
	for {
		reports, desired, done, err := calico.Rollout(ctx, cl.Kube)
		if err == nil && done {
			fmt.Fprintf(status, "rollout: calico-node running on all %d nodes, all nodes Ready; NetworkPolicy is enforced by Calico\n", desired)
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return &RolloutIncomplete{Nodes: reports, Wait: r.Wait}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}
