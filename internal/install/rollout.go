package install

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/phase"
)

// Rollout waits, once every node has joined, for calico-node on every node
// and every node Ready; without --wait it reports where they are and goes
// on. It is a phase apart from calico's because calico runs before the
// joins, and calico-node can only start on a node that has joined.
type Rollout struct{ *Context }

func (*Rollout) Name() string { return "rollout" }

// RolloutIncomplete means everything was applied but calico-node or the
// nodes did not become ready in time; Nodes says why, per node.
type RolloutIncomplete struct {
	Nodes []calico.NodeReport
	Wait  time.Duration
	// LastRead is set when the final read failed and Nodes come from an
	// earlier one.
	LastRead error
}

func (e *RolloutIncomplete) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Calico did not become ready within %s:", e.Wait)
	if e.LastRead != nil {
		fmt.Fprintf(&b, " (as last read; the final read failed: %v)", e.LastRead)
	}
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
	read := func(ctx context.Context) ([]calico.NodeReport, int32, bool, error) {
		return calico.Rollout(ctx, cl.Kube)
	}
	return watchRollout(ctx, read, r.WaitRollout, r.Wait, 5*time.Second, r.Runner.StatusWriter())
}

// rolloutReader reads calico-node's rollout and the nodes' readiness.
type rolloutReader func(context.Context) (reports []calico.NodeReport, desired int32, done bool, err error)

// watchRollout reads the rollout every poll until it is done (wait) or
// read once (no wait). An unreachable API server is retried until the
// timeout in both cases: on an emulated lab kube-apiserver went away for
// a restart at the very end of an install (run U), and a report-only step
// turned a built cluster into exit 1.
func watchRollout(ctx context.Context, read rolloutReader, wait bool, timeout, poll time.Duration, status io.Writer) error {
	start := time.Now()
	deadline := start.Add(timeout)
	var seen []calico.NodeReport
	for {
		reports, desired, done, err := read(ctx)
		if err == nil {
			seen = reports
		}
		switch {
		case err == nil && !wait:
			fmt.Fprintf(status, "rollout: not waiting (--wait=false): calico-node desired on %d nodes\n", desired)
			for _, n := range reports {
				fmt.Fprintf(status, "  %s: calico-node %s, ready %v\n", n.Node, n.Calico, n.Ready)
			}
			return nil
		case err == nil && done:
			fmt.Fprintf(status, "rollout: calico-node running on all %d nodes, all nodes Ready; NetworkPolicy is enforced by Calico\n", desired)
			return nil
		case time.Now().After(deadline):
			// A rollout seen incomplete stays exit 5 when only the last
			// read failed: on a loaded API server one GET in several times
			// out, and that says nothing new about Calico.
			if err != nil && seen != nil {
				return &RolloutIncomplete{Nodes: seen, Wait: timeout, LastRead: err}
			}
			if err != nil {
				return fmt.Errorf("reading the rollout for %s: %w", time.Since(start).Round(time.Second), err)
			}
			return &RolloutIncomplete{Nodes: reports, Wait: timeout}
		case err != nil:
			fmt.Fprintf(status, "rollout: cannot read it yet (%s so far, retried up to %s): %v\n", time.Since(start).Round(time.Second), timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}
