package topology

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A saved VM state restores only into the same virtual hardware: every
// change of the machine must name another boot snapshot (so the node boots
// cold), and nothing else may (so the next lab up resumes in seconds).
func TestBootSnapshotFollowsTheMachine(t *testing.T) {
	node := Node{Name: "kube-node1", Address: "172.31.3.11/24", Gateway: "172.31.3.1", CPUs: 4, MemoryMB: 4096}
	name := func(lab string, n Node, accel string) string {
		l := &Lab{Spec: &Spec{Name: lab}, VM: &VMOptions{ImageDir: "/img"}}
		m, err := l.machineOf(n, accel)
		if err != nil {
			t.Fatal(err)
		}
		args := l.qemuArgs(0, n, m, "/disk.qcow2")
		if i := slices.Index(args, "-smp"); i < 0 || args[i+1] != strconv.Itoa(n.CPUs) {
			t.Errorf("qemu args do not run the machine's vCPUs: %q", args)
		}
		return m.bootSnapshot()
	}
	base := name("e2e", node, "tcg")
	if again := name("e2e", node, "tcg"); again != base {
		t.Errorf("the same machine names two snapshots: %s, %s", base, again)
	}
	if !strings.HasPrefix(base, "boot-") {
		t.Errorf("snapshot %q", base)
	}
	changed := map[string]func(*Node) string{
		"vCPUs":   func(n *Node) string { n.CPUs = 2; return "tcg" },
		"memory":  func(n *Node) string { n.MemoryMB = 2048; return "tcg" },
		"address": func(n *Node) string { n.Address = "172.31.3.12/24"; return "tcg" },
		"gateway": func(n *Node) string { n.Gateway = "172.31.3.254"; return "tcg" },
		"name":    func(n *Node) string { n.Name = "kube-node2"; return "tcg" },
		"accel":   func(n *Node) string { return "kvm" },
	}
	for what, change := range changed {
		n := node
		accel := change(&n)
		if got := name("e2e", n, accel); got == base {
			t.Errorf("changed %s, same snapshot %s", what, got)
		}
	}
	if got := name("other", node, "tcg"); got == base {
		t.Errorf("another lab (another product_uuid), same snapshot %s", got)
	}
	// Nice is scheduling on the workstation, not the guest's hardware.
	n := node
	n.Nice = 5
	if got := name("e2e", n, "tcg"); got != base {
		t.Errorf("nice changed the snapshot: %s", got)
	}
}

// A lab daemon that exited (QEMU refusing a snapshot, say) fails the wait
// at once with its log's last line, not after the whole boot timeout.
func TestWaitReadyFailsOnAnExitedDaemon(t *testing.T) {
	l := &Lab{Spec: &Spec{Name: "t"}, Dir: t.TempDir()}
	if err := os.MkdirAll(l.memberDir("kube-node1"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := startDaemon("kube-node1", "qemu", filepath.Join(l.memberDir("kube-node1"), "qemu.log"),
		[]string{"sh", "-c", "echo starting; echo 'qemu-system-x86_64: Missing section footer for cpu'; sleep 0.3; exit 1"})
	if err != nil {
		t.Fatal(err)
	}
	l.state.Procs = append(l.state.Procs, p)
	for p.running() {
		time.Sleep(10 * time.Millisecond)
	}
	err = l.waitReady(context.Background())
	if err == nil || !strings.Contains(err.Error(), "kube-node1: qemu") || !strings.Contains(err.Error(), "Missing section footer") {
		t.Fatalf("waitReady: %v", err)
	}
	if strings.Contains(err.Error(), "not ready after") {
		t.Errorf("waited the whole limit for a daemon that had exited: %v", err)
	}
}
