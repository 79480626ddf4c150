package install

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
	"github.com/k8slab/k8slab/internal/kube"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestAPIServerEtcdEndpoints(t *testing.T) {
	tests := []struct {
		name string
		etcd []string
		want []string
	}{
		{"control plane is a member: its own member only", []string{"172.31.3.11", "172.31.3.12", "172.31.4.11"}, []string{"https://172.31.3.11:2379"}},
		{"control plane is not a member: all of them", []string{"172.31.3.12", "172.31.4.11", "172.31.4.12"}, []string{"https://172.31.3.12:2379", "https://172.31.4.11:2379", "https://172.31.4.12:2379"}},
		{"stacked etcd: none (kubeadm's local etcd)", []string{"172.31.3.11"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &cluster.Config{Nodes: []string{"172.31.3.11", "172.31.3.12", "172.31.4.11", "172.31.4.12"}, Etcd: tt.etcd}
			cfg.Default()
			c := &Context{Cluster: cfg}
			c.setFacts("172.31.3.11", provision.Facts{}, "172.31.3.11")
			cp := &ControlPlane{Context: c, Access: &Access{}}
			if got := cp.etcdEndpoints(); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// readyAPI is the control plane's hand-over with an API server (a local
// HTTP server) that answers /readyz, which the phase waits for.
func readyAPI(t *testing.T) *Access {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			fmt.Fprint(w, "ok")
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	kc := kubernetes.NewForConfigOrDie(&rest.Config{Host: srv.URL})
	return &Access{connect: func(host.Host, []byte) (*kube.Client, error) { return &kube.Client{Kube: kc}, nil }}
}

// controlPlanePhase is the control-plane phase of a one-node cluster
// (stacked etcd) on a fake node whose init state is state (none,
// partial, apiserver or done) and whose detached kubeadm runs exit 0.
func controlPlanePhase(t *testing.T, state string) (*ControlPlane, *hosttest.Fake) {
	t.Helper()
	ca, err := bootstrap.NewCA("kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	h := &hosttest.Fake{Label: "kube-node1", Rules: append([]hosttest.Rule{{Match: "then echo done;", Stdout: state + "\n"}}, detachedExit("0")...),
		Files: map[string][]byte{adminConfPath: []byte("admin.conf"), caCertPath: ca.Cert}}
	cfg := &cluster.Config{Name: "lab", Nodes: []string{"kube-node1"}, PodCIDR: "172.31.128.0/18", ServiceCIDR: "172.31.64.0/18"}
	cfg.Default()
	release, err := provision.LookupRelease(provision.DefaultKubernetesVersion)
	if err != nil {
		t.Fatal(err)
	}
	r, err := run.New(run.Options{Command: "install"}, []host.Host{h})
	if err != nil {
		t.Fatal(err)
	}
	c := &Context{Cluster: cfg, Release: release, Runner: r, Hosts: map[string]host.Host{"kube-node1": h}, Wait: time.Minute}
	c.setFacts("kube-node1", provision.Facts{Hostname: "kube-node1", Kernel: "6.1.0", CgroupVersion: 2}, "172.31.3.11")
	return &ControlPlane{Context: c, Access: readyAPI(t)}, h
}

// A fresh control plane: kubeadm's configuration rendered for this node
// and cluster, init in its two detached parts (the API server first),
// the cluster recorded, and the join credentials handed to the phases
// after it.
func TestControlPlaneInitsAFreshNode_SimulatedNodes(t *testing.T) {
	c, h := controlPlanePhase(t, "none")
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := string(h.Files[initConfigPath])
	for _, want := range []string{"kind: InitConfiguration", "name: kube-node1", "advertiseAddress: 172.31.3.11", "podSubnet: 172.31.128.0/18", "serviceSubnet: 172.31.64.0/18", "mode: nftables"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("init configuration lacks %q:\n%s", want, cfg)
		}
	}
	log := h.Log()
	first, rest := indexOf(log, "k8slab-kubeadm-init' "), indexOf(log, "k8slab-kubeadm-init-rest'")
	if indexOf(log, "upload: "+initConfigPath) < 0 || first < indexOf(log, "upload: "+initConfigPath) || rest < first {
		t.Errorf("want the configuration, then init's first part, then the rest: %q", h.Steps())
	}
	if h.Did("--ignore-preflight-errors=all") {
		t.Errorf("a fresh init skipped kubeadm's preflight: %q", h.Steps())
	}
	if !strings.Contains(string(h.Files[cluster.RecordPath]), "172.31.128.0/18") {
		t.Errorf("the cluster record: %q", h.Files[cluster.RecordPath])
	}
	hash, token, err := c.Access.join()
	if err != nil || !strings.HasPrefix(hash, "sha256:") || !strings.Contains(cfg, token) {
		t.Errorf("join credentials: hash %q, token %q in the config: %v, %v", hash, token, strings.Contains(cfg, token), err)
	}
}

// An interrupted init resumes past the preflight its own first half
// fails; an init whose API server part finished runs only the rest; a
// finished one is never initialized again (a re-run cannot wipe a
// working cluster) and makes no token.
func TestControlPlaneResumesOrLeavesAlone_SimulatedNodes(t *testing.T) {
	c, h := controlPlanePhase(t, "partial")
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !h.Did("--ignore-preflight-errors=all") || !h.Did("k8slab-kubeadm-init-rest'") {
		t.Errorf("interrupted init: %q", h.Steps())
	}

	c, h = controlPlanePhase(t, "apiserver")
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h.Did("k8slab-kubeadm-init' ") || !h.Did("k8slab-kubeadm-init-rest'") {
		t.Errorf("init with its first part done: %q", h.Steps())
	}

	c, h = controlPlanePhase(t, "done")
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h.Did("set -- 'state'") || h.Did("upload: "+initConfigPath) {
		t.Errorf("a finished control plane got kubeadm again: %q", h.Steps())
	}
	if _, token, err := c.Access.join(); err != nil || token != "" {
		t.Errorf("a finished control plane made a token %q (%v): joins get one through the API when they need it", token, err)
	}
}
