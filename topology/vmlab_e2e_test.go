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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	pool, err := ssh.NewPool(ssh.Options{
		KeyFiles:       []string{lab.KeyFile()},
		KnownHostsFile: filepath.Join(t.TempDir(), "known_hosts"),
		HostKeyPolicy:  ssh.AcceptNew,
		Dial:           lab.Dialer().DialContext,
		CommandTimeout: 2 * time.Minute,
	})
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
			out, err := host.Output(ctx, c, `uname -n; cat /etc/machine-id; cat /sys/class/dmi/id/product_uuid; stat -fc %T /sys/fs/cgroup; modprobe -a overlay br_netfilter && echo modules-ok`)
			if err != nil {
				t.Errorf("%s: %v", addr, err)
				return
			}
			f := strings.Fields(out)
			if len(f) != 5 {
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
}
