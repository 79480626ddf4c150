package lock

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
)

// nodes are three "nodes" on this machine, each with its own state dir,
// running the real lock script in /bin/sh.
func nodes(t *testing.T) ([]host.Host, []string) {
	var hs []host.Host
	var dirs []string
	for _, n := range []string{"n1", "n2", "n3"} {
		d := t.TempDir()
		hs = append(hs, &hosttest.Local{Label: n, Env: []string{"K8SLAB_STATE_DIR=" + d}})
		dirs = append(dirs, d)
	}
	return hs, dirs
}

func holder(id, ws string, pid int, ticks uint64) Holder {
	return Holder{ID: id, Workstation: ws, PID: pid, StartTicks: ticks, Started: time.Now(), Command: "install"}
}

func TestLock(t *testing.T) {
	ctx := context.Background()
	me := Me("run-a", "install", time.Now())
	live := Me("run-live", "install", time.Now()) // another run in this very process: alive
	// A process that has exited: its lock is stale.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		// prior locks per node index
		prior    map[int]Holder
		opts     Options
		wantHeld []string
		stale    int
	}{
		{"free nodes: taken", nil, Options{}, nil, 0},
		{"one node held by a live run elsewhere: refused, nothing kept", map[int]Holder{2: holder("run-b", "other-ws", 42, 1)}, Options{Alive: LocalAlive(me.Workstation)}, []string{"n3"}, 0},
		{"all held by a live local run (this test process)", map[int]Holder{0: live, 1: live, 2: live}, Options{Alive: LocalAlive(me.Workstation)}, []string{"n1", "n2", "n3"}, 0},
		{"killed local run: taken over", map[int]Holder{1: holder("run-k", me.Workstation, dead.Process.Pid, 1)}, Options{Alive: LocalAlive(me.Workstation)}, nil, 1},
		{"--force-unlock", map[int]Holder{0: holder("run-b", "other-ws", 42, 1)}, Options{Force: true}, nil, 0},
	}
	// The same cases for the node locks and for the workstation's copy.
	type backend struct {
		paths   []string
		acquire func(Options) (func() error, error)
	}
	backends := map[string]func(t *testing.T) backend{
		"nodes": func(t *testing.T) backend {
			hs, dirs := nodes(t)
			var b backend
			for _, d := range dirs {
				b.paths = append(b.paths, filepath.Join(d, "lock"))
			}
			b.acquire = func(o Options) (func() error, error) {
				release, err := Acquire(ctx, hs, me, o)
				return func() error { return release(ctx) }, err
			}
			return b
		},
		"local": func(t *testing.T) backend {
			dir := t.TempDir()
			b := backend{paths: []string{filepath.Join(dir, "n1.lock"), filepath.Join(dir, "n2.lock"), filepath.Join(dir, "n3.lock")}}
			b.acquire = func(o Options) (func() error, error) {
				release, err := AcquireLocal(dir, []string{"n1", "n2", "n3"}, me, o)
				return func() error { release(); return nil }, err
			}
			return b
		},
	}
	for _, kind := range []string{"nodes", "local"} {
		for _, c := range cases {
			t.Run(kind+"/"+c.name, func(t *testing.T) {
				b := backends[kind](t)
				for i, h := range c.prior {
					if err := os.WriteFile(b.paths[i], []byte(h.encode()), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				stale := 0
				c.opts.Stale = func(string, Holder) { stale++ }
				release, err := b.acquire(c.opts)
				if stale != c.stale {
					t.Errorf("%d stale locks taken over, want %d", stale, c.stale)
				}
				if c.wantHeld != nil {
					var he *HeldError
					if !errors.As(err, &he) {
						t.Fatalf("err = %v, want HeldError", err)
					}
					for _, n := range c.wantHeld {
						if _, ok := he.Held[n]; !ok || !strings.Contains(err.Error(), n+": k8slab install (pid ") {
							t.Errorf("error does not name %s's holder: %v", n, err)
						}
					}
					for i, p := range b.paths {
						data, _ := os.ReadFile(p)
						if strings.Contains(string(data), "id=run-a") {
							t.Errorf("node %d kept our lock after a refused acquire", i)
						}
						if h, ok := c.prior[i]; ok && !strings.Contains(string(data), "id="+h.ID) {
							t.Errorf("node %d lost the other run's lock: %q", i, data)
						}
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range b.paths {
					data, _ := os.ReadFile(p)
					if !strings.Contains(string(data), "id=run-a") {
						t.Errorf("%s: lock %q", p, data)
					}
				}
				// Release removes only our own lock.
				os.WriteFile(b.paths[0], []byte(holder("run-c", "ws", 1, 1).encode()), 0o644)
				if err := release(); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(b.paths[0]); err != nil {
					t.Errorf("release removed another run's lock")
				}
				for _, p := range b.paths[1:] {
					if _, err := os.Stat(p); !os.IsNotExist(err) {
						t.Errorf("%s: lock left after release", p)
					}
				}
			})
		}
	}
}

// stuckUnlock is a node that takes the lock but never answers the unlock,
// like one run's control-plane VM that accepted no SSH connection.
type stuckUnlock struct{ host.Host }

func (s stuckUnlock) Run(ctx context.Context, c host.Cmd) error {
	if strings.Contains(c.Command, "grep -qx 'id=") {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.Host.Run(ctx, c)
}

func TestReleaseIsNotHeldUpByOneNode(t *testing.T) {
	hs, dirs := nodes(t)
	hs[0] = stuckUnlock{hs[0]}
	release, err := Acquire(context.Background(), hs, Me("run-a", "install", time.Now()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The stuck node holds the release until this deadline; the others'
	// unlocks (a shell each) must be done by then, also on a loaded
	// machine (300 ms was too short beside an e2e run).
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := release(ctx); err == nil || !strings.Contains(err.Error(), "host n1: unlock") {
		t.Errorf("release: %v, want n1's unlock to fail", err)
	}
	for i, d := range dirs[1:] {
		if _, err := os.Stat(filepath.Join(d, "lock")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("n%d still locked after the release: %v", i+2, err)
		}
	}
}
