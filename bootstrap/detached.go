package bootstrap

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/k8slab/k8slab/internal/host"
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
}

func (d Detached) paths() (log, status string) {
	return DetachedDir + "/" + d.Unit + ".log", DetachedDir + "/" + d.Unit + ".status"
}

// Run starts the step unless it is already running, then waits until it
// ends or wait passes, calling progress with the log's newest line.
func (d Detached) Run(ctx context.Context, h host.Host, wait time.Duration, progress func(string)) error {
	log, status := d.paths()
	poll := d.Poll
	if poll == 0 {
		poll = 2 * time.Second
	}
	state, err := host.Output(ctx, h, "systemctl show -p ActiveState --value "+d.Unit+".service 2>/dev/null || true")
	if err != nil {
		return err
	}
	if s := strings.TrimSpace(state); s == "active" || s == "activating" {
		progress("already running since an earlier run: waiting for it")
	} else {
		start := fmt.Sprintf(`set -e
mkdir -p %[1]s
rm -f %[3]s
: > %[2]s
systemctl reset-failed %[4]s.service 2>/dev/null || true
systemd-run --quiet --unit %[4]s --collect -p StandardOutput=append:%[2]s -p StandardError=append:%[2]s \
	/bin/sh -c %[5]s`, DetachedDir, log, status, d.Unit,
			host.Quote(d.Command+`; echo $? > `+status))
		if _, err := host.Output(ctx, h, start); err != nil {
			return fmt.Errorf("%s: start: %w", d.Unit, err)
		}
	}
	deadline := time.Now().Add(wait)
	var shown string
	for {
		out, err := host.Output(ctx, h, fmt.Sprintf("cat %s 2>/dev/null || echo running; tail -n 1 %s 2>/dev/null", status, log))
		if err != nil {
			return fmt.Errorf("%s: following: %w", d.Unit, err)
		}
		first, last, _ := strings.Cut(out, "\n")
		if last = strings.TrimSpace(last); last != "" && last != shown {
			progress(last)
			shown = last
		}
		if first = strings.TrimSpace(first); first != "running" {
			code, _ := strconv.Atoi(first)
			if code == 0 {
				return nil
			}
			tail, _ := host.Output(ctx, h, "tail -n 15 "+log)
			return fmt.Errorf("%s exited with %d (log %s on the node):\n%s", d.Unit, code, log, tail)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still running after %s (it goes on; log %s on the node; raise --wait-timeout or re-run to keep waiting)", d.Unit, wait, log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}
