package bootstrap

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	nodescript "github.com/k8slab/k8slab/scripts/node"
)

// DetachedDir keeps the logs and exit codes of detached steps.
const DetachedDir = "/var/log/k8slab"

// Detached is a long command run on the node by systemd, not by the SSH
// session: kubeadm started in a session dies with it when the client goes
// away (met in the lab). k8slab follows its log and exit code instead, and
// a re-run that finds the step still running waits for it rather than
// starting a second one.
type Detached struct {
	Unit    string // systemd unit name, e.g. k8slab-kubeadm-init
	Command string
	// Poll is how often the log and status are read.
	Poll time.Duration
	// Dir keeps the step's log and exit code: DetachedDir unless set.
	Dir string
}

// Run starts the step unless it is already running, then waits until it
// ends or wait passes, calling progress with the log's newest line.
func (d Detached) Run(ctx context.Context, h host.Host, wait time.Duration, progress func(string)) error {
	dir := d.Dir
	if dir == "" {
		dir = DetachedDir
	}
	log := dir + "/" + d.Unit + ".log"
	poll := d.Poll
	if poll == 0 {
		poll = 2 * time.Second
	}
	script := func(action string, args ...string) (nodescript.Values, error) {
		out, err := host.Output(ctx, h, nodescript.Command("detached.sh", append([]string{action, dir, d.Unit}, args...)...))
		return nodescript.Parse(out), err
	}
	state, err := script("state")
	if err != nil {
		return err
	}
	if s := state.Get("state"); s == "active" || s == "activating" {
		progress("already running since an earlier run: waiting for it")
	} else if _, err := script("start", d.Command); err != nil {
		return fmt.Errorf("%s: start: %w", d.Unit, err)
	}
	deadline := time.Now().Add(wait)
	var shown string
	for {
		// The node waits up to a poll for the step's end (its lock), so the
		// end is seen when it comes; a step that holds no lock (started
		// by an older k8slab) is read once a poll.
		asked := time.Now()
		follow, err := script("follow", strconv.FormatFloat(poll.Seconds(), 'f', -1, 64))
		if err != nil {
			return fmt.Errorf("%s: following: %w", d.Unit, err)
		}
		if last := strings.TrimSpace(follow.Get("last")); last != "" && last != shown {
			progress(last)
			shown = last
		}
		if st := strings.TrimSpace(follow.Get("status")); st != "running" {
			code, err := strconv.Atoi(st)
			if err != nil {
				return fmt.Errorf("%s: exit status %q on the node (log %s)", d.Unit, st, log)
			}
			if code == 0 {
				return nil
			}
			tail, _ := host.Output(ctx, h, nodescript.Command("detached.sh", "tail", dir, d.Unit))
			return fmt.Errorf("%s exited with %d (log %s on the node):\n%s", d.Unit, code, log, tail)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still running after %s (it goes on; log %s on the node; raise --wait-timeout or re-run to keep waiting)", d.Unit, wait, log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll - time.Since(asked)):
		}
	}
}
