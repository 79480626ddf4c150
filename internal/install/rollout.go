package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/phase"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
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
	// LostExits name containers whose exit containerd lost (lostExits).
	LostExits []string
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
		if slices.Contains(n.Taints, podNetworkTaint) {
			fmt.Fprintf(&b, "; pods that need the pod network are kept off it (%s, lifted once calico-node marks its network available)", podNetworkTaint)
		}
	}
	for _, w := range e.Workloads {
		if !w.Ready {
			fmt.Fprintf(&b, "\n  %s: %s", w.Name, w.Problem)
		}
	}
	for _, p := range append(slices.Clone(e.Peering), e.LostExits...) {
		fmt.Fprintf(&b, "\n  %s", p)
	}
	return b.String()
}

func (r *Rollout) Plan() []phase.Step {
	if !r.WaitRollout {
		return []phase.Step{{Action: "report calico-node and node readiness (--wait=false: not waiting)"}}
	}
	return []phase.Step{{Action: fmt.Sprintf("wait up to %s for calico-node ready (Felix, BIRD) on every node, every node Ready, calico-kube-controllers and CoreDNS available; lift %s from each node once calico-node marks its network available", r.Wait, podNetworkTaint)}}
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
	status := r.Runner.StatusWriter()
	start := time.Now()
	read := func(ctx context.Context) (calico.Status, error) {
		st, err := calico.Rollout(ctx, cl.Kube)
		if err != nil {
			return st, err
		}
		if r.WaitRollout {
			proxies.look(ctx, st)
		}
		// Also without --wait: a taint an earlier, interrupted run left
		// goes once calico-node is up there.
		openNodes(ctx, cl.Kube, &st, func(node string, err error) {
			if err != nil {
				fmt.Fprintf(status, "rollout: %s: lifting %s: %v (tried again)\n", node, podNetworkTaint, err)
				return
			}
			fmt.Fprintf(status, "rollout: %s: pod network up after %s: %s lifted\n", node, time.Since(start).Round(time.Second), podNetworkTaint)
		})
		return st, nil
	}
	err = watchRollout(ctx, read, r.WaitRollout, r.Wait, rolloutPoll, status)
	var inc *RolloutIncomplete
	if errors.As(err, &inc) {
		if len(r.racks()) > 0 {
			inc.Peering = r.peeringProblems(ctx, cl.Dyn)
		}
		inc.LostExits = lostExits(ctx, hosts, inc.Status)
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

// rolloutPoll is how often the rollout is read (when a read is quick; see
// pace): each read is five small API requests, and each second of poll
// is, on average, half a second added to every install.
const rolloutPoll = time.Second

// podNetworkTaint is bootstrap.PodNetworkTaint as Status lists taints.
var podNetworkTaint = bootstrap.PodNetworkTaint.Key + ":" + bootstrap.PodNetworkTaint.Effect

// openNodes lifts bootstrap.PodNetworkTaint from every node whose
// calico-node has marked its network available (or is Ready), and
// reports each node it lifted (err nil) or failed to (the rollout is then
// not done; the next read tries again).
func openNodes(ctx context.Context, kube kubernetes.Interface, st *calico.Status, report func(node string, err error)) {
	for i := range st.Nodes {
		n := &st.Nodes[i]
		if !slices.Contains(n.Taints, podNetworkTaint) || !(n.NetworkAvailable || n.Calico == calico.CalicoReady) {
			continue
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			node, err := kube.CoreV1().Nodes().Get(ctx, n.Node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			kept := slices.DeleteFunc(slices.Clone(node.Spec.Taints), func(t corev1.Taint) bool {
				return t.Key == bootstrap.PodNetworkTaint.Key
			})
			if len(kept) == len(node.Spec.Taints) {
				return nil
			}
			node.Spec.Taints = kept
			_, err = kube.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			st.Done = false
		} else {
			n.Taints = slices.DeleteFunc(n.Taints, func(t string) bool { return t == podNetworkTaint })
		}
		report(n.Node, err)
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
	var said time.Time // when an unreadable rollout was last said so
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
		asked := time.Now()
		st, err := read(ctx)
		took := time.Since(asked)
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
		case err != nil && time.Since(said) >= 10*time.Second:
			said = time.Now()
			fmt.Fprintf(status, "rollout: cannot read it yet (%s so far, retried up to %s): %v\n", time.Since(start).Round(time.Second), timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pace(poll, took)):
		}
	}
}
