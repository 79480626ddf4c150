package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/phase"
	"k8s.io/client-go/dynamic"
)

// Rollout waits, once every node has joined, for calico-node on every node
// and every node Ready; without --wait it reports where they are and goes
// on. It is a phase apart from calico's because calico runs before the
// joins, and calico-node can only start on a node that has joined.
type Rollout struct {
	*Context
	Access *Access // from the control-plane phase
}

func (*Rollout) Name() string { return "rollout" }

// RolloutIncomplete means everything was applied but calico-node, the
// nodes or the Deployments the pod network needs did not become ready in
// time; Status says why, per node and Deployment.
type RolloutIncomplete struct {
	calico.Status
	Wait time.Duration
	// LastRead is set when the final read failed and Nodes come from an
	// earlier one.
	LastRead error
	// Peering is, in as-per-rack mode, what is wrong with each node's BGP
	// session with its rack's router, as calico-node reports it.
	Peering []string
}

func (e *RolloutIncomplete) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Calico did not become ready within %s:", e.Wait)
	if e.LastRead != nil {
		fmt.Fprintf(&b, " (as last read; the final read failed: %v)", e.LastRead)
	}
	for _, n := range e.Nodes {
		if n.Ready && n.Calico == calico.CalicoReady {
			continue
		}
		fmt.Fprintf(&b, "\n  %s: calico-node %s", n.Node, n.Calico)
		if !n.Ready {
			fmt.Fprintf(&b, "; node NotReady (%s)", n.Problem)
		}
	}
	for _, w := range e.Workloads {
		if !w.Ready {
			fmt.Fprintf(&b, "\n  %s: %s", w.Name, w.Problem)
		}
	}
	for _, p := range e.Peering {
		fmt.Fprintf(&b, "\n  %s", p)
	}
	return b.String()
}

func (r *Rollout) Plan() []phase.Step {
	if !r.WaitRollout {
		return []phase.Step{{Action: "report calico-node and node readiness (--wait=false: not waiting)"}}
	}
	return []phase.Step{{Action: fmt.Sprintf("wait up to %s for calico-node ready (Felix, BIRD) on every node, every node Ready, calico-kube-controllers and CoreDNS available", r.Wait)}}
}

func (r *Rollout) Run(ctx context.Context) error {
	cl, err := r.kubeClient(r.Access)
	if err != nil {
		return err
	}
	hosts := map[string]host.Host{}
	for _, n := range r.Cluster.Nodes {
		hosts[r.Node(n).Facts.Hostname] = r.Hosts[n]
	}
	proxies := newProxyWatch(cl.Kube, hosts, r.Cluster.ServiceCIDR, r.proxyMode(), r.Runner.StatusWriter())
	read := func(ctx context.Context) (calico.Status, error) {
		st, err := calico.Rollout(ctx, cl.Kube)
		if err == nil && r.WaitRollout {
			proxies.look(ctx, st)
		}
		return st, err
	}
	err = watchRollout(ctx, read, r.WaitRollout, r.Wait, 5*time.Second, r.Runner.StatusWriter())
	var inc *RolloutIncomplete
	if errors.As(err, &inc) && len(r.racks()) > 0 {
		inc.Peering = r.peeringProblems(ctx, cl.Dyn)
	}
	return err
}

// peeringProblems says, for a rollout that did not finish in as-per-rack
// mode, which node's session with its rack's router is not Established
// and in what state, as calico-node reports it (given 20 s to report).
func (r *Rollout) peeringProblems(ctx context.Context, dyn dynamic.Interface) []string {
	racks := map[string]calico.Rack{}
	var names []string
	for _, n := range r.Cluster.Nodes {
		rack, err := r.rackOf(n)
		if err != nil {
			continue
		}
		name := r.Node(n).Facts.Hostname
		names = append(names, name)
		racks[name] = calico.Rack{Name: rack.Name, Router: rack.Router, ASN: rack.ASN}
	}
	reader, err := calico.NewPeerReader(ctx, dyn, "k8slab-rollout", names)
	if err != nil {
		return []string{"BGP sessions could not be read: " + err.Error()}
	}
	defer reader.Close(ctx)
	var problems []string
	for deadline := time.Now().Add(20 * time.Second); ; {
		problems, _ = reader.RackProblems(ctx, racks)
		if len(problems) == 0 || time.Now().After(deadline) {
			return problems
		}
		select {
		case <-ctx.Done():
			return problems
		case <-time.After(5 * time.Second):
		}
	}
}

// rolloutReader reads calico-node's rollout and the nodes' readiness.
type rolloutReader func(context.Context) (calico.Status, error)

// watchRollout reads the rollout every poll until it is done (wait) or
// read once (no wait). An unreachable API server is retried until the
// timeout in both cases: on an emulated lab kube-apiserver went away for
// a restart at the very end of an install, and a report-only step
// turned a built cluster into exit 1.
func watchRollout(ctx context.Context, read rolloutReader, wait bool, timeout, poll time.Duration, status io.Writer) error {
	start := time.Now()
	deadline := start.Add(timeout)
	var seen *calico.Status
	// What became ready when: where a slow rollout's time went.
	ready := map[string]bool{}
	timeline := func(st calico.Status) {
		for _, n := range st.Nodes {
			for _, c := range []struct {
				what string
				ok   bool
			}{{n.Node + ": node Ready", n.Ready}, {n.Node + ": calico-node ready", n.Calico == calico.CalicoReady}} {
				if c.ok && !ready[c.what] {
					ready[c.what] = true
					fmt.Fprintf(status, "rollout: %s after %s\n", c.what, time.Since(start).Round(time.Second))
				}
			}
		}
		for _, w := range st.Workloads {
			if what := w.Name + " available"; w.Ready && !ready[what] {
				ready[what] = true
				fmt.Fprintf(status, "rollout: %s after %s\n", what, time.Since(start).Round(time.Second))
			}
		}
	}
	for {
		st, err := read(ctx)
		if err == nil {
			seen = &st
			if wait {
				timeline(st)
			}
		}
		switch {
		case err == nil && !wait:
			fmt.Fprintf(status, "rollout: not waiting (--wait=false): calico-node desired on %d nodes\n", st.Desired)
			for _, n := range st.Nodes {
				fmt.Fprintf(status, "  %s: calico-node %s, ready %v\n", n.Node, n.Calico, n.Ready)
			}
			for _, w := range st.Workloads {
				fmt.Fprintf(status, "  %s: available %v %s\n", w.Name, w.Ready, w.Problem)
			}
			return nil
		case err == nil && st.Done:
			fmt.Fprintf(status, "rollout: calico-node ready on all %d nodes, all nodes Ready, calico-kube-controllers and CoreDNS available; NetworkPolicy is enforced by Calico\n", st.Desired)
			return nil
		case time.Now().After(deadline):
			// A rollout seen incomplete stays exit 5 when only the last
			// read failed: on a loaded API server one GET in several times
			// out, and that says nothing new about Calico.
			if err != nil && seen != nil {
				return &RolloutIncomplete{Status: *seen, Wait: timeout, LastRead: err}
			}
			if err != nil {
				return fmt.Errorf("reading the rollout for %s: %w", time.Since(start).Round(time.Second), err)
			}
			return &RolloutIncomplete{Status: st, Wait: timeout}
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
