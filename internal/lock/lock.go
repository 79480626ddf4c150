// Package lock keeps two k8slab runs from changing the same nodes at
// once: each run that changes nodes holds a lock file on every one of
// them, saying who holds it.
package lock

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/proc"
	nodescript "github.com/k8slab/k8slab/scripts/node"
)

// Path is the lock file on each node (a shell expression: tests on the
// local machine point K8SLAB_STATE_DIR elsewhere).
const Path = `"${K8SLAB_STATE_DIR:-/var/lib/k8slab}/lock"`

// Holder identifies a run.
type Holder struct {
	ID          string    // random per run
	Workstation string    // hostname of the machine k8slab runs on
	PID         int       // k8slab's process there
	StartTicks  uint64    // the process's start (with PID: one process)
	Started     time.Time // when the lock was taken, for people
	Command     string
}

func (h Holder) String() string {
	return fmt.Sprintf("k8slab %s (pid %d on %s, since %s)", h.Command, h.PID, h.Workstation, h.Started.Format(time.RFC3339))
}

func (h Holder) encode() string {
	return fmt.Sprintf("id=%s\nworkstation=%s\npid=%d\nstart_ticks=%d\nstarted=%s\ncommand=%s\n", h.ID, h.Workstation, h.PID, h.StartTicks, h.Started.Format(time.RFC3339Nano), h.Command)
}

func decode(s string) Holder {
	v := nodescript.Parse(s)
	h := Holder{ID: v.Get("id"), Workstation: v.Get("workstation"), Command: v.Get("command")}
	h.PID, _ = strconv.Atoi(v.Get("pid"))
	h.StartTicks, _ = strconv.ParseUint(v.Get("start_ticks"), 10, 64)
	h.Started, _ = time.Parse(time.RFC3339Nano, v.Get("started"))
	return h
}

// HeldError says which nodes another run holds.
type HeldError struct {
	Held map[string]Holder // node -> holder
}

func (e *HeldError) Error() string {
	nodes := make([]string, 0, len(e.Held))
	for n := range e.Held {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	var b strings.Builder
	b.WriteString("another run holds the lock:")
	for _, n := range nodes {
		fmt.Fprintf(&b, "\n  %s: %s", n, e.Held[n])
	}
	b.WriteString("\n(if that run is gone, --force-unlock clears the lock)")
	return b.String()
}

// Options for Acquire.
type Options struct {
	// Force removes any existing lock first (--force-unlock).
	Force bool
	// Alive tells whether a holder on this workstation still runs; a lock
	// whose process is gone (a killed run) is taken over. Nil: never.
	Alive func(Holder) bool
	// Stale is told about each lock taken over.
	Stale func(node string, h Holder)
}

// Acquire takes the lock on every node, in parallel; if any node is held
// by another run, it releases what it took and returns *HeldError.
func Acquire(ctx context.Context, hosts []host.Host, me Holder, o Options) (release func(context.Context) error, err error) {
	var mu sync.Mutex
	held := map[string]Holder{}
	var taken []host.Host
	var errs []error
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			other, ok, err := take(ctx, h, me, o)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("host %s: lock: %w", h.Name(), err))
			case ok:
				taken = append(taken, h)
			default:
				held[h.Name()] = other
			}
		}()
	}
	wg.Wait()
	release = func(ctx context.Context) error {
		// All at once: one node slow to accept SSH must not spend the
		// others' share of the caller's limit.
		errs := make([]error, len(taken))
		var wg sync.WaitGroup
		for i, h := range taken {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Only our own lock: a --force-unlock by someone else may
				// have handed the node to another run meanwhile.
				if _, err := host.Output(ctx, h, fmt.Sprintf("grep -qx 'id=%s' %s && rm -f %s; true", me.ID, Path, Path)); err != nil {
					errs[i] = fmt.Errorf("host %s: unlock: %w", h.Name(), err)
				}
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	if len(errs) > 0 || len(held) > 0 {
		release(ctx)
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return nil, &HeldError{Held: held}
	}
	return release, nil
}

// take creates the lock file exclusively (noclobber: O_EXCL); when it
// exists it reports the holder, or takes over a stale one.
func take(ctx context.Context, h host.Host, me Holder, o Options) (Holder, bool, error) {
	create := fmt.Sprintf("mkdir -p \"${K8SLAB_STATE_DIR:-/var/lib/k8slab}\" && (set -C; printf %%s %s > %s) 2>/dev/null && echo taken || cat %s", host.Quote(me.encode()), Path, Path)
	if o.Force {
		create = "rm -f " + Path + "; " + create
	}
	for attempt := 0; attempt < 2; attempt++ {
		out, err := host.Output(ctx, h, create)
		if err != nil {
			return Holder{}, false, err
		}
		if strings.TrimSpace(out) == "taken" {
			return Holder{}, true, nil
		}
		other := decode(out)
		if other.ID == me.ID {
			return Holder{}, true, nil // two names for one machine
		}
		if attempt > 0 || o.Alive == nil || o.Alive(other) {
			return other, false, nil
		}
		if o.Stale != nil {
			o.Stale(h.Name(), other)
		}
		// Remove exactly the stale lock, then race for it like anyone else.
		if _, err := host.Output(ctx, h, fmt.Sprintf("grep -qx 'id=%s' %s && rm -f %s; true", other.ID, Path, Path)); err != nil {
			return Holder{}, false, err
		}
	}
	return Holder{}, false, nil
}

// LocalAlive reports whether a holder from this workstation still runs
// (same hostname, same PID and process start: a reused PID is another
// process). Holders on other workstations count as alive: k8slab cannot
// see their processes.
func LocalAlive(workstation string) func(Holder) bool {
	return func(h Holder) bool {
		if h.Workstation != workstation || h.PID == 0 {
			return true
		}
		return proc.Running(h.PID, h.StartTicks)
	}
}

// Me describes this process as a lock holder.
func Me(id, command string, now time.Time) Holder {
	ws, _ := os.Hostname()
	_, _, start, _ := proc.Stat(os.Getpid())
	return Holder{ID: id, Workstation: ws, PID: os.Getpid(), StartTicks: start, Started: now, Command: command}
}

// AcquireLocal takes this workstation's copy of the node locks: one file
// per node in dir, taken before any SSH connection is opened, so a second
// run from the same workstation is refused at once (the node locks took
// 22 s to answer on loaded emulated nodes). The node locks stay the
// authority between workstations. Stale files (their process is gone) are
// taken over as on the nodes.
func AcquireLocal(dir string, nodes []string, me Holder, o Options) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local lock: %w", err)
	}
	var taken []string
	release = func() {
		for _, p := range taken {
			if b, err := os.ReadFile(p); err == nil && decode(string(b)).ID == me.ID {
				os.Remove(p)
			}
		}
	}
	held := map[string]Holder{}
	for _, n := range nodes {
		p := filepath.Join(dir, url.PathEscape(n)+".lock")
		if o.Force {
			os.Remove(p)
		}
		for attempt := 0; ; attempt++ {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err == nil {
				_, err = f.WriteString(me.encode())
				f.Close()
				taken = append(taken, p)
				if err != nil {
					release()
					return nil, fmt.Errorf("local lock: %w", err)
				}
				break
			}
			if !os.IsExist(err) {
				release()
				return nil, fmt.Errorf("local lock: %w", err)
			}
			b, _ := os.ReadFile(p)
			other := decode(string(b))
			if other.ID == me.ID {
				break
			}
			if attempt > 0 || o.Alive == nil || o.Alive(other) {
				held[n] = other
				break
			}
			if o.Stale != nil {
				o.Stale(n, other)
			}
			os.Remove(p)
		}
	}
	if len(held) > 0 {
		release()
		return nil, &HeldError{Held: held}
	}
	return release, nil
}

// LocalDir is where AcquireLocal keeps its files: K8SLAB_LOCK_DIR, else a
// per-user directory under the system's temporary directory.
func LocalDir() string {
	if d := os.Getenv("K8SLAB_LOCK_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("k8slab-%d", os.Getuid()), "locks")
}
