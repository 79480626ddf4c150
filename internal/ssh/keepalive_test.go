package ssh

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/ssh/sshtest"
)

// TestKeepaliveOnlyInUse_SimulatedSSH: against a SIMULATED endpoint
// (sshtest), an idle pooled connection is never probed, and one with a
// command under way is (a stuck node's connection is still watched).
func TestKeepaliveOnlyInUse_SimulatedSSH(t *testing.T) {
	dir := t.TempDir()
	srv, err := sshtest.Start(1, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	pool, err := NewPool(Options{User: "root", UserSet: true, KeyFiles: []string{srv.KeyFile},
		KnownHostsFile: filepath.Join(dir, "known_hosts"), HostKeyPolicy: AcceptNew, KeepAlive: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	tg, _ := ParseTarget(srv.Addrs[0])
	cl, err := pool.Host(tg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := host.Output(ctx, cl, "true"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // idle: ten intervals
	if n := srv.Keepalives.Load(); n != 0 {
		t.Errorf("%d probes on an idle connection, want none", n)
	}
	hung, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := host.Output(hung, cl, "hang"); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrTimeout) {
		t.Errorf("hung command: %v", err)
	}
	if n := srv.Keepalives.Load(); n < 3 {
		t.Errorf("%d probes while a command ran for ten intervals, want several", n)
	}
}
