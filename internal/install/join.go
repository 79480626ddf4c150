package install

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/phase"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Join adds the workers in parallel with a JoinConfiguration k8slab
// renders from its own token and CA hash (not scraped from kubeadm's
// output). A node that has joined already is left alone.
type Join struct {
	*Context
	Access *Access // from the control-plane phase
}

func (*Join) Name() string { return "join" }

const joinConfigPath = "/etc/k8slab/kubeadm-join.yaml"

// workers are the nodes that join: every worker but the control plane.
func (j *Join) workers() []string {
	var out []string
	for _, w := range j.Cluster.Workers {
		if !j.Node(w).ControlPlane {
			out = append(out, w)
		}
	}
	return out
}

func (j *Join) Plan() []phase.Step {
	var steps []phase.Step
	for _, w := range j.workers() {
		action := "kubeadm join " + j.Cluster.ControlPlane + " as a worker" + j.gateNote()
		if j.NetworkFirst && j.GatePods {
			action += "; once calico-node is ready on " + j.Cluster.ControlPlane + ", holding its join slot until calico-node is ready on it (--network-first)"
		}
		steps = append(steps, phase.Step{Node: w, Action: action})
	}
	return steps
}

func (j *Join) Run(ctx context.Context) error {
	workers := j.workers()
	if len(workers) == 0 {
		return nil
	}
	hash, initToken, err := j.Access.join()
	if err != nil {
		return err
	}
	// kubelet.conf is written once the node has authenticated; from there
	// the kubelet finishes registering by itself.
	states := map[string]string{}
	var mu sync.Mutex
	err = j.each(ctx, "join check", workers, []string{j.Cluster.ControlPlane}, func(ctx context.Context, n Node, t *run.Task) error {
		out, err := host.Output(ctx, t.Host, "if [ -f /etc/kubernetes/kubelet.conf ]; then echo joined; elif [ -e /etc/kubernetes/pki/ca.crt ]; then echo partial; else echo none; fi")
		if err != nil {
			return err
		}
		st := strings.TrimSpace(out)
		if st == "joined" {
			t.Status("already joined: nothing to do")
		}
		mu.Lock()
		states[n.Name] = st
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	var pending []string
	for _, w := range workers {
		if states[w] != "joined" {
			pending = append(pending, w)
		}
	}
	if len(pending) == 0 {
		return nil
	}
	token, err := j.joinToken(ctx, initToken)
	if err != nil {
		return err
	}
	if j.NetworkFirst && j.GatePods {
		j.controlPlaneNetwork(ctx)
	}
	api := fmt.Sprintf("%s:%d", j.controlPlane().IP, bootstrap.APIServerPort)
	// A single (stacked) etcd member always leads: nothing to keep home.
	var etcd *EtcdAccess
	if len(j.Cluster.Etcd) > 1 {
		if etcd, err = NewEtcdAccess(ctx, j.Cluster, j.Hosts); err != nil {
			// Only the leader's place depends on it: joins go on.
			fmt.Fprintf(j.Runner.StatusWriter(), "etcd: cannot check its leader before the joins: %v\n", err)
		}
	}
	slots := newLimiter(j.JoinParallel)
	return j.each(ctx, "join", pending, []string{j.Cluster.ControlPlane}, func(ctx context.Context, n Node, t *run.Task) error {
		h := t.Host
		cfg, err := bootstrap.RenderJoin(bootstrap.JoinInput{
			Node: n.kubeadm(), APIServer: api,
			Token: token, CACertHash: hash, Wait: j.Wait, IgnorePreflight: n.kubeadmIgnores(),
			GatePods: j.GatePods,
		})
		if err != nil {
			return err
		}
		if _, err := provision.SyncFiles(ctx, h, []provision.FileSpec{provision.Generated(joinConfigPath, 0o600, string(cfg))}); err != nil {
			return err
		}
		release, err := slots.acquire(ctx, func() { t.Status("waiting for a join slot (--join-parallel %d)", cap(slots)) })
		if err != nil {
			return err
		}
		defer release()
		if etcd != nil {
			j.leaderHome(ctx, etcd.PKI, etcd.Endpoints, etcd.Dial)
		}
		join := bootstrap.Detached{Unit: "k8slab-kubeadm-join", Command: "kubeadm join --config " + joinConfigPath}
		// An interrupted join, or one that lost the API server half-way,
		// goes on past the preflight that its own first half would fail.
		resume := join
		resume.Command += " --ignore-preflight-errors=all"
		if states[n.Name] == "partial" {
			t.Status("resuming an interrupted kubeadm join")
			join = resume
		}
		if err := j.kubeadm(ctx, t, join, &resume); err != nil {
			return err
		}
		if j.NetworkFirst && j.GatePods {
			// The slot is held until the node's own calico-node is
			// ready, so with --join-parallel 1 each node's network
			// comes up before the next node joins.
			if took, err := j.waitNetwork(ctx, n.Facts.Hostname); err != nil {
				t.Status("%v; the next join goes on regardless", err)
			} else {
				t.Status("calico-node ready %s after its join", took)
			}
		}
		return nil
	})
}

// joinToken is the token of this run's kubeadm init, or, on a re-run of
// an initialized cluster, a fresh one created through the API.
func (j *Join) joinToken(ctx context.Context, initToken string) (string, error) {
	if initToken != "" {
		return initToken, nil
	}
	token, err := bootstrap.NewToken()
	if err != nil {
		return "", err
	}
	j.secret(token)
	cl, err := j.kubeClient(j.Access)
	if err != nil {
		return "", err
	}
	// Long enough for a slow join; the token cleaner removes it afterwards.
	if err := cl.CreateBootstrapToken(ctx, token, j.Wait+time.Hour); err != nil {
		return "", err
	}
	return token, nil
}

// controlPlaneNetwork (--network-first) waits, before the workers join,
// until calico-node on the control plane is ready (its pod-network taint
// lifted), so CoreDNS and calico-kube-controllers start while the workers
// join.
func (j *Join) controlPlaneNetwork(ctx context.Context) {
	status := j.Runner.StatusWriter()
	name := j.controlPlane().Facts.Hostname
	if took, err := j.waitNetwork(ctx, name); err != nil {
		fmt.Fprintf(status, "join: %s: %v; the workers join regardless\n", name, err)
	} else {
		fmt.Fprintf(status, "join: %s: calico-node ready after %s; the workers join\n", name, took)
	}
}

// waitNetwork waits until calico-node is ready on the Kubernetes node
// named (how long it took), lifting the pod-network taint of every node
// whose calico-node is ready meanwhile. After the wait budget, or without
// a calico-node DaemonSet to wait for, it says why it stopped waiting:
// the rollout then reports what is not ready.
func (j *Join) waitNetwork(ctx context.Context, name string) (time.Duration, error) {
	status := j.Runner.StatusWriter()
	start := time.Now()
	cl, err := j.kubeClient(j.Access)
	if err == nil {
		_, err = cl.Kube.AppsV1().DaemonSets(metav1.NamespaceSystem).Get(ctx, "calico-node", metav1.GetOptions{})
	}
	if err != nil {
		return 0, fmt.Errorf("not waiting for calico-node: %w", err)
	}
	for {
		asked := time.Now()
		st, err := calico.Rollout(ctx, cl.Kube)
		took := time.Since(asked)
		if err == nil {
			openNodes(ctx, cl.Kube, &st, func(node string, err error) {
				if err == nil {
					fmt.Fprintf(status, "join: %s: pod network up after %s: %s lifted\n", node, time.Since(start).Round(time.Second), podNetworkTaint)
				}
			})
			for _, n := range st.Nodes {
				if n.Node == name && n.Calico == calico.CalicoReady {
					return time.Since(start).Round(time.Second), nil
				}
			}
		}
		if time.Since(start) > j.Wait {
			return j.Wait, fmt.Errorf("calico-node not ready after %s", j.Wait)
		}
		select {
		case <-ctx.Done():
			return time.Since(start).Round(time.Second), ctx.Err()
		case <-time.After(pace(rolloutPoll, took)):
		}
	}
}
