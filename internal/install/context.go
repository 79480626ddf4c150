// Package install is `k8slab install`: the phases that turn prepared
// machines into the user's cluster, one file each, sharing a Context.
package install

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/phase"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
)

// Context is what every phase reads and what earlier phases leave for
// later ones. It is built once per run; there is no global state.
type Context struct {
	Cluster   *cluster.Config
	Release   provision.Release
	Bundle    *provision.Bundle
	BundleDir string
	// Download fetches the release when there is no bundle (--artifacts).
	Download *provision.Downloader
	Runner   *run.Runner
	// Hosts are the nodes' transports, by node as written in Cluster.Nodes.
	Hosts map[string]host.Host
	// Wait bounds the long waits (control plane up, joins, rollouts).
	Wait time.Duration
	// WaitRollout: wait for calico-node and Ready nodes (else report and go on).
	WaitRollout bool
	// GatePods registers the nodes this run initializes or joins with
	// bootstrap.PodNetworkTaint; only a run whose rollout waits, and so
	// lifts it, may.
	GatePods bool
	// JoinParallel caps how many workers run kubeadm join at once (0: all).
	// Every joining kubelet loads the one API server (TLS bootstrap, CSR
	// approval); on emulated VMs sharing two host cores, three at once
	// starved it past kubeadm's own timeouts.
	JoinParallel int
	// NetworkFirst holds the workers' joins until calico-node is ready on
	// the control plane (and lifts its pod-network taint then), and each
	// worker's join slot (JoinParallel) until calico-node is ready on that
	// worker, so that Calico's start does not compete with the joins. On
	// the emulated VMs calico-node's first init container on the control
	// plane, started while three workers joined, took 2m54s to start and
	// containerd lost its exit; with one join at a time every calico-node
	// started without a restart. On container nodes an install's joins and
	// rollout took 47 s with it against 31-32 s without, so it is asked
	// for, not the default (docs/design.md).
	NetworkFirst bool
	// KubeconfigDir gets <cluster>.kubeconfig; MergeKubeconfig, if set, is
	// the kubeconfig file to merge it into.
	KubeconfigDir   string
	MergeKubeconfig string
	// Force proceeds although the cluster's recorded settings differ.
	Force bool
	// FixMachineID lets preflight regenerate repeated machine-ids.
	FixMachineID bool
	// Now is the workstation clock (for the skew check).
	Now func() time.Time

	mu    sync.Mutex
	facts map[string]provision.Facts
	// NodeIP is each node's address on the route to the control plane:
	// the kubelet's node-ip.
	nodeIP map[string]string
}

// factsOf is what preflight learned about a node (Node.Facts; rackOf,
// which Node itself calls, reads it here).
func (c *Context) factsOf(node string) provision.Facts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.facts[node]
}

// cgroupV1 lists the nodes preflight found on cgroup v1.
func (c *Context) cgroupV1() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range c.Cluster.Nodes {
		if c.facts[n].CgroupVersion == 1 {
			out = append(out, n)
		}
	}
	return out
}

// controlPlane is the control-plane node.
func (c *Context) controlPlane() Node { return c.Node(c.Cluster.ControlPlane) }

// nodeIPs is a node's kubelet address as a list (none before preflight).
func (c *Context) nodeIPs(node string) []string {
	if ip := c.Node(node).IP; ip != "" {
		return []string{ip}
	}
	return nil
}

func (c *Context) setFacts(node string, f provision.Facts, ip string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.facts == nil {
		c.facts, c.nodeIP = map[string]provision.Facts{}, map[string]string{}
	}
	c.facts[node], c.nodeIP[node] = f, ip
}

// each runs fn on the given nodes through the runner: in parallel, logged
// per node, failures wrapped with the node's name.
func (c *Context) each(ctx context.Context, step string, nodes []string, needs []string, fn func(ctx context.Context, n Node, t *run.Task) error) error {
	err := c.Runner.Run(ctx, run.Step{Name: step, Hosts: nodes, Needs: needs, Do: func(ctx context.Context, t *run.Task) error {
		return fn(ctx, c.Node(t.Host.Name()), t)
	}})
	if err != nil {
		return err
	}
	if c.Runner.Failed() {
		return fmt.Errorf("%s failed on one or more nodes", step)
	}
	return nil
}

// Phases returns the installation in order.
func Phases(c *Context) []phase.Phase {
	access := &Access{} // made by control-plane, used by every phase after it
	return []phase.Phase{
		&Preflight{c},
		&Provision{c},
		&Etcd{c},
		&ControlPlane{Context: c, Access: access},
		&DNS{c, access},
		&Calico{c, access},
		&Join{c, access},
		&Peering{c, access},
		&Rollout{c, access},
		&Kubeconfig{c, access},
	}
}

// ensureArtifacts makes sure the release's files are on the workstation:
// the bundle given with --artifacts, or a download verified against the
// published checksums. Every step after it is the same for both.
func (c *Context) ensureArtifacts(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.Bundle != nil {
		return nil
	}
	if c.Download == nil {
		return fmt.Errorf("no --artifacts bundle and no downloader")
	}
	arch := ""
	for _, n := range c.Cluster.Nodes {
		a := c.facts[n].Arch
		if arch != "" && a != arch {
			return fmt.Errorf("nodes of different architectures (%s, %s): downloads serve one per cluster", arch, a)
		}
		arch = a
	}
	b, dir, err := c.Download.Fetch(ctx, c.Release, arch, c.Cluster.Calico.Version)
	if err != nil {
		return err
	}
	c.Bundle, c.BundleDir = b, dir
	return nil
}

// secret keeps a bootstrap token ("id.secret") out of logs and reports;
// the secret half is masked on its own too.
func (c *Context) secret(token string) {
	_, sec, _ := strings.Cut(token, ".")
	c.Runner.AddSecret(token, sec)
}

// kubeadm runs a kubeadm step detached on the node and follows it. A
// step that failed in its preflight (nothing changed yet) is run again;
// one that failed because the API server did not answer — an emulated
// control plane restarts its API server while it starts up — is resumed
// with resume (nil: not resumable). At most three attempts, with a
// growing pause; except that a preflight which failed only because the
// API server did not answer in time is tried again for as long as the
// wait (--wait-timeout) allows: kubeadm join's preflight reads three
// ConfigMaps with fixed 10 s timeouts, which a loaded emulated control
// plane missed three times in a row for one worker while it served the
// others.
func (c *Context) kubeadm(ctx context.Context, t *run.Task, d bootstrap.Detached, resume *bootstrap.Detached) error {
	start := time.Now()
	// When each line came is what tells where minutes went on a slow node.
	progress := func(line string) { t.Status("%s: %s (at %s)", d.Unit, line, time.Since(start).Round(time.Second)) }
	timeLeft := func(pause time.Duration) bool { return time.Since(start)+pause < c.Wait }
	return retryKubeadm(ctx, d, resume, 20*time.Second, timeLeft, func(d bootstrap.Detached) error {
		return d.Run(ctx, t.Host, c.Wait, progress)
	}, func(msg string) { t.Status("%s: %s", d.Unit, msg) })
}

func retryKubeadm(ctx context.Context, d bootstrap.Detached, resume *bootstrap.Detached, pause time.Duration, timeLeft func(pause time.Duration) bool, run func(bootstrap.Detached) error, status func(string)) error {
	err := run(d)
	for attempt := 1; err != nil; attempt++ {
		preflight := strings.Contains(err.Error(), "error execution phase preflight")
		wait := min(time.Duration(attempt)*pause, 2*time.Minute)
		next, why := d, "preflight failed (nothing changed)"
		switch {
		case preflight && apiUnreachable(err) && timeLeft(wait):
			why = "preflight: the API server did not answer in time (nothing changed)"
		case attempt >= 3:
			return err
		case preflight:
		case resume != nil && apiUnreachable(err):
			next, why = *resume, "the API server did not answer"
		default:
			return err
		}
		// Once resumed, always resumed: the step's first attempt left
		// files that the plain step's preflight refuses.
		d = next
		// The follower shows only the log's newest line at each poll, so
		// the failing line itself is said here or nowhere.
		status(fmt.Sprintf("%s (%s), trying again in %s (attempt %d)", why, failedLine(err), wait, attempt+1))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		err = run(next)
	}
	return nil
}

// failedLine is the line of a kubeadm error that names what failed.
func failedLine(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	for _, l := range lines {
		if strings.Contains(l, "error execution phase") {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

// apiUnreachable: the line that failed says the API server refused or
// timed out. Only that line: kubeadm's log above it had "connection
// refused" in a DNS warning about the node's own hostname, which made a
// join that failed on its own leftover files look like a slow API
// server, tried again for 21 minutes.
func apiUnreachable(err error) bool {
	s := failedLine(err)
	for _, m := range []string{"connection refused", "TLS handshake timeout", "Client.Timeout exceeded", "context deadline exceeded", "i/o timeout",
		"the server was unable to return a response in the time allotted"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// limiter admits at most cap() callers at once; a nil limiter admits all.
type limiter chan struct{}

func newLimiter(n int) limiter {
	if n <= 0 {
		return nil
	}
	return make(limiter, n)
}

// acquire waits for a slot, calling waiting first if it has to wait.
func (l limiter) acquire(ctx context.Context, waiting func()) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	select {
	case l <- struct{}{}:
	default:
		waiting()
		select {
		case l <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return func() { <-l }, nil
}

// gateNote says that the nodes register with the pod-network taint.
func (c *Context) gateNote() string {
	if !c.GatePods {
		return ""
	}
	return "; registered with " + podNetworkTaint + " (the rollout lifts it once calico-node has the node's network up)"
}
