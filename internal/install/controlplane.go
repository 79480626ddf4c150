package install

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/phase"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
)

// ControlPlane runs kubeadm init with a v1beta4 configuration k8slab
// renders, then fetches admin.conf and computes the join credentials.
type ControlPlane struct {
	*Context
	// Access gets what the phases after this one need: admin.conf, the
	// CA's hash, this run's bootstrap token.
	Access *Access
}

func (*ControlPlane) Name() string { return "control-plane" }

// kubeadm's files on the control plane.
const (
	initConfigPath = "/etc/k8slab/kubeadm-init.yaml"
	adminConfPath  = "/etc/kubernetes/admin.conf"
	caCertPath     = "/etc/kubernetes/pki/ca.crt"
)

func (c *ControlPlane) Plan() []phase.Step {
	etcd := "stacked etcd"
	if eps := c.etcdClientEndpoints(); len(eps) > 0 {
		etcd = "external etcd " + strings.Join(eps, ",")
	}
	return []phase.Step{{Node: c.Cluster.ControlPlane, Action: fmt.Sprintf(
		"kubeadm init %s (service %s, pods %s, %s, kube-proxy %s; kube-apiserver first, controller-manager and scheduler once it is ready), fetch admin.conf",
		c.Release.Kubernetes, c.Cluster.ServiceCIDR, c.Cluster.PodCIDR, etcd, c.plannedProxyMode()) + c.cgroupV1Note() + c.gateNote()}}
}

// cgroupV1Note says what changes for nodes on cgroup v1.
func (c *ControlPlane) cgroupV1Note() string {
	if v1 := c.cgroupV1(); len(v1) > 0 {
		return fmt.Sprintf("; cgroup v1 on %s: kubelet failCgroupV1=false, kubeadm's %s check skipped there", strings.Join(v1, ","), bootstrap.CgroupV1Preflight)
	}
	return ""
}

func (c *ControlPlane) plannedProxyMode() string {
	if c.Cluster.KubeProxyMode == "" && c.controlPlane().Facts.Kernel == "" {
		return "nftables if the kernel is 5.13 or newer, else iptables"
	}
	return c.proxyMode()
}

// proxyMode picks nftables on kernels that have it (5.13+ is what
// kube-proxy requires), else iptables.
func (c *Context) proxyMode() string {
	if c.Cluster.KubeProxyMode != "" {
		return c.Cluster.KubeProxyMode
	}
	k := c.controlPlane().Facts.Kernel
	var major, minor int
	fmt.Sscanf(k, "%d.%d", &major, &minor)
	if major > 5 || major == 5 && minor >= 13 {
		return "nftables"
	}
	return "iptables"
}

func (c *ControlPlane) Run(ctx context.Context) error {
	cp := c.Cluster.ControlPlane
	return c.each(ctx, "control-plane", []string{cp}, nil, func(ctx context.Context, n Node, t *run.Task) error {
		h := t.Host
		state, err := initState(ctx, h)
		if err != nil {
			return err
		}
		var token string
		if state == initDone {
			// Never initialized twice: a re-run cannot wipe a working
			// cluster. Joins that still need a token get one then.
			t.Status("already initialized: nothing to do")
		} else {
			if token, err = bootstrap.NewToken(); err != nil {
				return err
			}
			c.secret(token)
			if err := c.init(ctx, t, n, state, token); err != nil {
				return err
			}
		}
		admin, err := h.ReadFile(ctx, adminConfPath)
		if err != nil {
			return err
		}
		ca, err := h.ReadFile(ctx, caCertPath)
		if err != nil {
			return err
		}
		hash, err := bootstrap.CACertHash(ca)
		if err != nil {
			return err
		}
		c.Access.set(admin, hash, token)
		rec, err := c.Cluster.Record()
		if err != nil {
			return err
		}
		if _, err := provision.SyncFiles(ctx, h, []provision.FileSpec{provision.Generated(cluster.RecordPath, 0o600, string(rec))}); err != nil {
			return fmt.Errorf("recording the cluster: %w", err)
		}
		if state == initDone {
			// A finished control plane must also answer before later phases
			// trust it; a starved emulated VM can take minutes to.
			return c.waitReady(ctx, t)
		}
		return nil
	})
}

func (c *ControlPlane) init(ctx context.Context, t *run.Task, cp Node, state initStatus, token string) error {
	cfg, err := bootstrap.RenderInit(bootstrap.InitInput{
		ClusterName:          c.Cluster.Name,
		KubernetesVersion:    c.Release.Kubernetes,
		ControlPlane:         cp.kubeadm(),
		ServiceCIDR:          c.Cluster.ServiceCIDR,
		PodCIDR:              c.Cluster.PodCIDR,
		EtcdEndpoints:        c.etcdEndpoints(),
		Token:                token,
		ControlPlaneIsWorker: cp.Worker,
		ProxyMode:            c.proxyMode(),
		Wait:                 c.Wait,
		CgroupV1:             len(c.cgroupV1()) > 0,
		IgnorePreflight:      cp.kubeadmIgnores(),
		GatePods:             c.GatePods,
	})
	if err != nil {
		return err
	}
	files := []provision.FileSpec{provision.Generated(initConfigPath, 0o600, string(cfg))}
	patches := bootstrap.ProbePatches()
	for _, name := range slices.Sorted(maps.Keys(patches)) {
		files = append(files, provision.Generated(bootstrap.PatchesDir+"/"+name, 0o644, patches[name]))
	}
	if _, err := provision.SyncFiles(ctx, t.Host, files); err != nil {
		return err
	}
	h := t.Host
	first, rest := bootstrap.InitCommands(initConfigPath)
	if state != initAPIServerStarted {
		if state == initPartial {
			// kubeadm reuses the certificates and kubeconfigs it wrote; only
			// its preflight objects to the files being there.
			t.Status("resuming an interrupted kubeadm init")
			first += " --ignore-preflight-errors=all"
		} else {
			t.Status("kubeadm init, kube-apiserver first (this takes minutes on emulated VMs)")
		}
		if err := c.kubeadm(ctx, t, bootstrap.Detached{Unit: "k8slab-kubeadm-init", Command: first + " && touch " + apiServerStartedMarker}, nil); err != nil {
			return err
		}
	}
	admin, err := h.ReadFile(ctx, adminConfPath)
	if err != nil {
		return err
	}
	c.Access.setAdmin(admin)
	t.Status("waiting for kube-apiserver before starting kube-controller-manager and kube-scheduler")
	if err := c.waitReady(ctx, t); err != nil {
		return err
	}
	// Every phase of the second part can run again (kubeadm creates or
	// updates its objects), so an API server that drops out is resumed.
	finish := bootstrap.Detached{Unit: "k8slab-kubeadm-init-rest", Command: rest + " && touch " + initDoneMarker}
	t.Status("kubeadm init: kube-controller-manager, kube-scheduler and the rest")
	return c.kubeadm(ctx, t, finish, &finish)
}

// waitReady polls the API server's /readyz through the SSH tunnel.
func (c *ControlPlane) waitReady(ctx context.Context, t *run.Task) error {
	cl, err := c.Access.client(c.Hosts[c.Cluster.ControlPlane])
	if err != nil {
		return err
	}
	start := time.Now()
	var said time.Time
	for {
		asked := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := cl.Readyz(rctx)
		cancel()
		took := time.Since(asked)
		if err == nil {
			return nil
		}
		if time.Since(start) > c.Wait {
			return fmt.Errorf("the control plane was initialized but its API server is not ready after %s: %w", c.Wait, err)
		}
		if time.Since(said) >= 10*time.Second {
			said = time.Now()
			t.Status("waiting for the API server's /readyz (%s so far): %v", time.Since(start).Round(time.Second), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pace(startPoll(time.Since(start)), took)):
		}
	}
}

// startPoll is how often a component that is starting (kube-apiserver,
// etcd's members) is asked whether it is up, after waiting so far: every
// half second for a minute, which is how long they take on real hardware
// (kube-apiserver ready 5-7 s after its manifest, on a 3 s poll seen up to
// 3 s late in every install), then every 3 s while a slow node takes
// minutes.
func startPoll(waited time.Duration) time.Duration {
	if waited < time.Minute {
		return 500 * time.Millisecond
	}
	return 3 * time.Second
}

// initDoneMarker is written only when kubeadm init exits 0: admin.conf
// alone appears half-way through init. apiServerStartedMarker: its first
// part (InitCommands) exited 0.
const (
	initDoneMarker         = "/etc/k8slab/kubeadm-init.done"
	apiServerStartedMarker = "/etc/k8slab/kubeadm-init-apiserver.done"
)

type initStatus int

const (
	initNone             initStatus = iota
	initPartial                     // an earlier init was interrupted or failed
	initAPIServerStarted            // the first part finished; the second did not
	initDone
)

// initState tells a finished control plane (never initialized again, so a
// re-run cannot wipe a working cluster) from an interrupted init (resumed)
// and a fresh node.
func initState(ctx context.Context, h host.Host) (initStatus, error) {
	out, err := host.Output(ctx, h, fmt.Sprintf(`if [ -f %s ]; then echo done; elif [ -f %s ]; then echo apiserver; elif [ -e /etc/kubernetes/manifests/kube-apiserver.yaml ] || [ -f %s ]; then echo partial; else echo none; fi`, initDoneMarker, apiServerStartedMarker, adminConfPath))
	if err != nil {
		return initNone, err
	}
	switch strings.TrimSpace(out) {
	case "done":
		return initDone, nil
	case "apiserver":
		return initAPIServerStarted, nil
	case "partial":
		return initPartial, nil
	}
	return initNone, nil
}

// etcdEndpoints: an API server on an etcd member talks to that member
// only, as kubeadm's stacked control planes do (127.0.0.1:2379). With all
// three, its hundreds of gRPC channels each opened TLS connections to every
// member; on emulated nodes those handshakes starved the control plane
// until even its dials to the local member timed out and kube-apiserver
// exited. The other members still replicate every write and keep quorum.
func (c *ControlPlane) etcdEndpoints() []string {
	all := c.etcdClientEndpoints()
	for _, e := range all {
		if u, err := url.Parse(e); err == nil && u.Hostname() == c.controlPlane().IP {
			return []string{e}
		}
	}
	return all
}
