package topology_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/ssh"
	"github.com/k8slab/k8slab/provision"
	"github.com/k8slab/k8slab/topology/labtest"
)

// TestE2EVMLab boots the four reference nodes as Debian VMs behind the BIRD
// leaves and checks what kubeadm will need of them. Run by `make e2e`
// (K8SLAB_E2E=1); the namespace-lab tests cover the fabric itself.
func TestE2EVMLab(t *testing.T) {
	if os.Getenv("K8SLAB_E2E") == "" {
		t.Skip("VM lab: run with make e2e (K8SLAB_E2E=1)")
	}
	start := time.Now()
	lab := labtest.UpVMs(t, os.Getenv("K8SLAB_E2E_FRESH") != "")
	t.Logf("VM lab up in %s", time.Since(start).Round(time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()

	o := lab.SSHOptions()
	o.KnownHostsFile, o.HostKeyPolicy = filepath.Join(t.TempDir(), "known_hosts"), ssh.AcceptNew
	// Importing and running seven images on an emulated VM took 110 s
	// on a quiet host and over 2 min under load: wait generously.
	o.CommandTimeout = 15 * time.Minute
	pool, err := ssh.NewPool(o)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	type identity struct{ hostname, machineID, uuid, cgroup, modules string }
	var mu sync.Mutex
	seen := map[string]identity{}
	var wg sync.WaitGroup
	for i, addr := range lab.Spec.NodeAddrs() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pool.Host(ssh.Target{Host: addr})
			if err != nil {
				t.Error(err)
				return
			}
			out, err := host.Output(ctx, c, `uname -n; cat /etc/machine-id; cat /sys/class/dmi/id/product_uuid; stat -fc %T /sys/fs/cgroup; modprobe -a overlay br_netfilter && echo modules-ok; grep -c nameserver /etc/resolv.conf; getent hosts $(uname -n) >/dev/null && echo resolves-self`)
			if err != nil {
				t.Errorf("%s: %v", addr, err)
				return
			}
			f := strings.Fields(out)
			// No resolver outside the lab, and the node knows its own name.
			if len(f) != 7 || f[5] != "0" || f[6] != "resolves-self" {
				t.Errorf("%s: unexpected output %q", addr, out)
				return
			}
			id := identity{f[0], f[1], f[2], f[3], f[4]}
			if id.hostname != lab.Spec.Nodes[i].Name || id.cgroup != "cgroup2fs" || id.modules != "modules-ok" || len(id.machineID) != 32 {
				t.Errorf("%s: %+v", addr, id)
			}
			facts, err := provision.GatherFacts(ctx, c)
			if err != nil || facts.CgroupVersion != 2 || facts.DefaultAddr != addr+"/24" || facts.OSID != "debian" {
				t.Errorf("%s: facts %+v %v", addr, facts, err)
			}
			mu.Lock()
			seen[addr] = id
			mu.Unlock()
		}()
	}
	wg.Wait()
	machineIDs, uuids := map[string]string{}, map[string]string{}
	for addr, id := range seen {
		if other, dup := machineIDs[id.machineID]; dup {
			t.Errorf("%s and %s share machine-id %s", addr, other, id.machineID)
		}
		if other, dup := uuids[id.uuid]; dup {
			t.Errorf("%s and %s share product_uuid %s", addr, other, id.uuid)
		}
		machineIDs[id.machineID], uuids[id.uuid] = addr, addr
	}
	if len(seen) != 4 {
		t.Fatalf("reached %d of 4 VMs", len(seen))
	}
	fmt.Fprintf(os.Stderr, "e2e: 4 VMs verified in %s\n", time.Since(start).Round(time.Second))

	t.Run("bundle images import and run", func(t *testing.T) {
		testBundleOnVM(t, ctx, pool)
	})
}

// testBundleOnVM proves the offline bundle on a real node: its manifest
// verifies, and the bundle's own containerd, runc and ctr import the
// pause image and run it.
func testBundleOnVM(t *testing.T, ctx context.Context, pool *ssh.Pool) {
	dir := os.Getenv("K8SLAB_BUNDLE")
	if dir == "" {
		t.Fatal("K8SLAB_BUNDLE is not set (make e2e builds the bundle and sets it)")
	}
	b, err := provision.LoadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pool.Host(ssh.Target{Host: "172.31.3.12"})
	if err != nil {
		t.Fatal(err)
	}
	upload := func(local, remote string, mode os.FileMode) {
		f, err := os.Open(filepath.Join(dir, local))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		if err := c.Upload(ctx, host.File{Path: remote, Mode: mode, Size: st.Size()}, f); err != nil {
			t.Fatal(err)
		}
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
		upload("bin/"+bin, "/usr/local/bin/"+bin, 0o755)
	}
	// Every image kubeadm needs must import, and what it carries must run:
	// the kube-proxy image's nft proves its shared libraries came along.
	r := b.Release
	runs := map[string]string{
		"registry.k8s.io/kube-apiserver:" + r.Kubernetes:          "kube-apiserver --version",
		"registry.k8s.io/kube-controller-manager:" + r.Kubernetes: "kube-controller-manager --version",
		"registry.k8s.io/kube-scheduler:" + r.Kubernetes:          "kube-scheduler --version",
		"registry.k8s.io/kube-proxy:" + r.Kubernetes:              "nft --version",
		"registry.k8s.io/etcd:" + r.EtcdImageTag:                  "etcd --version",
		"registry.k8s.io/coredns/coredns:" + r.CoreDNS:            "/coredns -version",
		"registry.k8s.io/pause:" + r.Pause:                        "/pause -v",
	}
	want := map[string]string{
		"kube-apiserver --version": r.Kubernetes, "kube-controller-manager --version": r.Kubernetes,
		"kube-scheduler --version": r.Kubernetes, "nft --version": "nftables",
		"etcd --version": strings.TrimPrefix(r.Etcd, "v"), "/coredns -version": strings.TrimPrefix(r.CoreDNS, "v"),
		"/pause -v": "v" + r.Pause,
	}
	script := `set -e
systemd-run --quiet --unit k8slab-e2e-containerd /usr/local/bin/containerd
for i in $(seq 1 100); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done
`
	for i, ref := range r.Images() {
		file := b.Images[ref]
		if file == "" || runs[ref] == "" {
			t.Fatalf("bundle has no image or no check for %s", ref)
		}
		upload(file, "/tmp/"+filepath.Base(file), 0o644)
		// PATH is set for the images without an Env of their own.
		script += fmt.Sprintf("ctr -n k8s.io images import /tmp/%s >/dev/null\necho \"== %s\"\nctr -n k8s.io run --rm --env PATH=/usr/local/bin:/usr/sbin:/usr/bin %s e2e-%d %s 2>&1\n",
			filepath.Base(file), runs[ref], ref, i, runs[ref])
	}
	// The node's disk returns to its snapshot at the next lab up, so this
	// leaves nothing behind for later runs.
	out, err := host.Output(ctx, c, script)
	if err != nil {
		t.Fatalf("containerd/ctr on the node: %v\n%s", err, out)
	}
	for _, section := range strings.Split(out, "== ")[1:] {
		cmd, output, _ := strings.Cut(section, "\n")
		if !strings.Contains(output, want[cmd]) {
			t.Errorf("%s printed %q, want %q", cmd, output, want[cmd])
		}
		delete(want, cmd)
	}
	if len(want) > 0 {
		t.Errorf("never ran: %v\n%s", want, out)
	}
}
