package provision_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/ssh"
	"github.com/k8slab/k8slab/provision"
	"github.com/k8slab/k8slab/topology/labtest"
)

// TestE2EProvisionVMs prepares the four VMs from the offline bundle, lets
// kubeadm's own preflight judge the control plane, and proves a second
// run changes nothing and restarts nothing.
func TestE2EProvisionVMs(t *testing.T) {
	if os.Getenv("K8SLAB_E2E_INSTALL") == "" {
		t.Skip("install tier: run with make e2e-install (K8SLAB_E2E_INSTALL=1)")
	}
	dir := os.Getenv("K8SLAB_BUNDLE")
	b, err := provision.LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	lab := labtest.UpVMs(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	o := lab.SSHOptions()
	o.KnownHostsFile, o.HostKeyPolicy = filepath.Join(t.TempDir(), "known_hosts"), ssh.AcceptNew
	o.CommandTimeout = 10 * time.Minute
	pool, err := ssh.NewPool(o)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	nodes := lab.Spec.NodeAddrs()
	hosts := map[string]*ssh.Client{}
	for _, n := range nodes {
		c, err := pool.Host(ssh.Target{Host: n})
		if err != nil {
			t.Fatal(err)
		}
		hosts[n] = c
	}
	run := func() (map[string][]string, time.Duration) {
		start := time.Now()
		var mu sync.Mutex
		changes := map[string][]string{}
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The control plane's preflight below renders stacked etcd,
				// so it needs the etcd image too (kubeadm would pull it).
				roles := provision.Roles{ControlPlane: i == 0, EtcdMember: i < 3, StackedEtcd: i == 0}
				ch, err := provision.PrepareNode(ctx, hosts[n], b, dir, roles, func(string) {})
				if err != nil {
					t.Errorf("%s: %v", n, err)
				}
				mu.Lock()
				changes[n] = ch
				mu.Unlock()
			}()
		}
		wg.Wait()
		return changes, time.Since(start)
	}
	first, d1 := run()
	t.Logf("first provisioning: %s", d1.Round(time.Second))
	if t.Failed() {
		t.FailNow()
	}
	cp := hosts[nodes[0]]
	started := func() string {
		out, err := host.Output(ctx, cp, "systemctl show -p ActiveEnterTimestampMonotonic --value containerd")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	before := started()
	for _, n := range nodes {
		if len(first[n]) == 0 {
			t.Errorf("%s: first run changed nothing", n)
		}
	}
	// kubeadm's own preflight is the judge of a prepared node.
	initCfg, err := bootstrap.RenderInit(bootstrap.InitInput{
		ClusterName: "k8slab", KubernetesVersion: b.Release.Kubernetes,
		ControlPlane: bootstrap.Node{Name: "kube-node1", IP: nodes[0]},
		ServiceCIDR:  "172.31.64.0/18", PodCIDR: "172.31.128.0/18", Token: "abcdef.0123456789abcdef",
		ProxyMode: "nftables", Wait: 5 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Upload(ctx, host.File{Path: "/tmp/k8slab-preflight.yaml", Mode: 0o600}, strings.NewReader(string(initCfg))); err != nil {
		t.Fatal(err)
	}
	out, err := host.Output(ctx, cp, "kubeadm init phase preflight --config /tmp/k8slab-preflight.yaml 2>&1")
	if err != nil {
		t.Fatalf("kubeadm preflight on the provisioned control plane: %v\n%s", err, out)
	}
	checks, err := host.Output(ctx, cp, `containerd config dump | grep -c "SystemdCgroup = true"; crictl images -q | wc -l; kubeadm version -o short`)
	if err != nil {
		t.Fatal(err)
	}
	images := len(b.Release.Images())
	if _, ok := b.Images[provision.ProbeImage]; ok {
		images++ // verify's test image comes with newer bundles
	}
	if f := strings.Fields(checks); len(f) != 3 || f[0] == "0" || f[1] != fmt.Sprint(images) || f[2] != b.Release.Kubernetes {
		t.Errorf("control plane: SystemdCgroup lines, CRI images, kubeadm version = %q (want >0, %d, %s)", checks, images, b.Release.Kubernetes)
	}

	second, d2 := run()
	t.Logf("second provisioning: %s (first %s)", d2.Round(100*time.Millisecond), d1.Round(time.Second))
	for _, n := range nodes {
		if len(second[n]) > 0 {
			t.Errorf("%s: re-run changed %v", n, second[n])
		}
	}
	if after := started(); after != before {
		t.Errorf("containerd was restarted by a no-op re-run (%s -> %s)", before, after)
	}
	if d2 > d1/5 {
		t.Errorf("re-run took %s, more than a fifth of the first run's %s", d2, d1)
	}
}
