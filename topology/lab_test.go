package topology_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/ssh"
	"github.com/k8slab/k8slab/topology"
	"github.com/k8slab/k8slab/topology/labtest"
)

// TestLabUpDown builds the reference fabric with real BIRD and sshd and
// checks it behaves like the GNS3 lab: BGP converged, node subnets routed
// through the spine, each node with its own hostname.
func TestLabUpDown(t *testing.T) {
	lab := labtest.Up(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	st := lab.Status(ctx)
	if !st.Up {
		t.Fatalf("status not up: %v", st.Issues)
	}
	for _, r := range st.Routers {
		for name, s := range r.Sessions {
			if s != "Established" {
				t.Errorf("%s: BGP %s = %s", r.Name, name, s)
			}
		}
	}
	// Rack 1 reaches rack 2 only through leaf1 -> spine -> leaf2.
	out, err := lab.Run(ctx, "kube-node1", "ip route get 172.31.4.12")
	if err != nil || !strings.Contains(out, "via 172.31.3.1") {
		t.Errorf("node1 route to node4: %q %v", out, err)
	}
	out, err = lab.Run(ctx, "leaf1", "ip route show 172.31.4.0/24")
	if err != nil || !strings.Contains(out, "via 172.31.1.1") || !strings.Contains(out, "bird") {
		t.Errorf("leaf1 route to rack 2 should be BGP-learned via the spine: %q %v", out, err)
	}
	out, err = lab.Run(ctx, "workstation", "ping -c1 -W2 172.31.4.12 >/dev/null && echo ok")
	if err != nil || !strings.Contains(out, "ok") {
		t.Errorf("workstation cannot ping node4 across the fabric: %q %v", out, err)
	}
	// The lab refuses a second Up of a healthy lab without rebuilding it.
	procs := st.Procs
	if err := lab.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if got := lab.Status(ctx).Procs; len(got) != len(procs) || got[0].PID != procs[0].PID {
		t.Errorf("second Up rebuilt a healthy lab")
	}
}

// TestLabDownAfterCrash simulates a test process that died mid-Up: the
// namespaces exist but the state is gone. Down must still find and remove
// them by name, and kill what runs inside them.
func TestLabDownAfterPartialState(t *testing.T) {
	lab := labtest.Up(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A stray process inside a lab namespace, unknown to the lab's state.
	// Deleting a namespace succeeds even with it inside, so its PID is what
	// proves Down killed it.
	out, err := lab.Run(ctx, "kube-node2", "setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $!")
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(out)
	fresh := topology.New(lab.Spec, "") // no in-memory state: reads only what is on disk
	if err := fresh.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if st := lab.Status(ctx); st.Up {
		t.Fatalf("lab still up after Down")
	}
	if stat, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && !strings.Contains(string(stat), ") Z ") {
		t.Errorf("stray process %s inside the lab survived Down: %s", pid, stat)
	}
}

// TestLabNodesHaveNoOutsideResolver: nothing a test runs on a lab node may
// send DNS to the host's resolvers outside the lab. The node's /etc is its
// own mount namespace, so it is read through the node's sshd.
func TestLabNodesHaveNoOutsideResolver(t *testing.T) {
	lab := labtest.Up(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := ssh.NewPool(lab.SSHOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, addr := range lab.Spec.NodeAddrs() {
		c, _ := pool.Host(ssh.Target{Host: addr})
		out, err := host.Output(ctx, c, "cat /etc/resolv.conf; getent hosts $(uname -n)")
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if strings.Contains(out, "nameserver") || !strings.Contains(out, "kube-node") {
			t.Errorf("%s: resolver or own name wrong:\n%s", addr, out)
		}
	}
}
