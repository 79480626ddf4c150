package install

import (
	"context"
	"fmt"
	"strings"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/phase"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
)

// Join adds the workers in parallel with a JoinConfiguration k8slab
// renders from its own token and CA hash (not scraped from kubeadm's
// output). A node that has joined already is left alone.
type Join struct{ *Context }

func (*Join) Name() string { return "join" }

const joinConfigPath = "/etc/k8slab/kubeadm-join.yaml"

func (j *Join) workers() []string {
	var out []string
	for _, w := range j.Cluster.Workers {
		if w != j.Cluster.ControlPlane {
			out = append(out, w)
		}
	}
	return out
}

func (j *Join) Plan() []phase.Step {
	var steps []phase.Step
	for _, w := range j.workers() {
		steps = append(steps, phase.Step{Node: w, Action: "kubeadm join " + j.Cluster.ControlPlane + " as a worker"})
	}
	return steps
}

func (j *Join) Run(ctx context.Context) error {
	workers := j.workers()
	if len(workers) == 0 {
		return nil
	}
	j.mu.Lock()
	token, hash := j.token, j.caHash
	j.mu.Unlock()
	if token == "" {
		return fmt.Errorf("no join token: the control-plane phase must run first (it is idempotent: --only control-plane,join)")
	}
	api := fmt.Sprintf("%s:%d", j.NodeIP(j.Cluster.ControlPlane), bootstrap.APIServerPort)
	return j.each(ctx, "join", workers, []string{j.Cluster.ControlPlane}, func(ctx context.Context, node string, t *run.Task) error {
		h := t.Host
		// kubelet.conf is written once the node has authenticated; from
		// there the kubelet finishes registering by itself.
		out, err := host.Output(ctx, h, "if [ -f /etc/kubernetes/kubelet.conf ]; then echo joined; elif [ -e /etc/kubernetes/pki/ca.crt ]; then echo partial; fi")
		if err != nil {
			return err
		}
		state := strings.TrimSpace(out)
		if state == "joined" {
			t.Status("already joined: nothing to do")
			return nil
		}
		cfg, err := bootstrap.RenderJoin(bootstrap.JoinInput{
			Node: bootstrap.Node{Name: j.Facts(node).Hostname, IP: j.NodeIP(node)}, APIServer: api,
			Token: token, CACertHash: hash, Wait: j.Wait,
		})
		if err != nil {
			return err
		}
		if _, err := provision.SyncFiles(ctx, h, []provision.FileSpec{provision.Generated(joinConfigPath, 0o600, string(cfg))}); err != nil {
			return err
		}
		cmd := "kubeadm join --config " + joinConfigPath
		if state == "partial" {
			t.Status("resuming an interrupted kubeadm join")
			cmd += " --ignore-preflight-errors=all"
		}
		join := bootstrap.Detached{Unit: "k8slab-kubeadm-join", Command: cmd}
		return join.Run(ctx, h, j.Wait, func(line string) { t.Status("kubeadm join: %s", line) })
	})
}
