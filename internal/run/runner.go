// Package run executes steps on many hosts in parallel and reports what
// happened on each one.
//
// Failure semantics:
//   - A step runs on every host that has not failed yet, at most Parallel
//     at a time. When one host fails, the others finish their current step:
//     nothing is interrupted half-way on a healthy node.
//   - A failed host takes no part in later steps (status "failed", the
//     first error kept).
//   - A step that declares Needs (e.g. joins need the control plane) does
//     not start at all when any needed host has failed; its hosts are
//     reported "skipped" with the reason.
//   - The report lists every host with status and first error, wrapped
//     with the host's name; Failed() drives a non-zero exit code.
package run

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/k8slab/k8slab/internal/host"
)

// State of a host in a run.
type State string

const (
	Pending State = "pending"
	Running State = "running"
	OK      State = "ok"
	Failed  State = "failed"
	Skipped State = "skipped"
)

// Options configure a Runner.
type Options struct {
	// Command names the run in the report ("exec", "facts", "install").
	Command string
	// Parallel bounds how many hosts work at once; 0 means all.
	Parallel int
	// LogDir gets a timestamped run directory with one log per host.
	LogDir string
	// Status receives progress (normally stderr); nil is silent.
	Status io.Writer
	// Live redraws one status line per host in place (a terminal).
	Live     bool
	Redactor *Redactor
	// Now is the clock; tests pin it.
	Now func() time.Time
}

// Runner runs steps over a fixed set of hosts.
type Runner struct {
	opts    Options
	runDir  string
	started time.Time
	hosts   []*hostRun
	display display
	// status buffers the plain progress lines (nil: none, or the live
	// display, which draws whole frames itself).
	status  *flushWriter
	flusher *flusher
}

type hostRun struct {
	h        host.Host
	logFile  *os.File
	logBuf   *flushWriter
	log      *LineWriter
	mu       sync.Mutex
	state    State
	step     string
	stepT0   time.Time
	last     string
	err      error
	exitCode int
	elapsed  time.Duration
	steps    []StepResult
}

// StepResult is one host's outcome of one step.
type StepResult struct {
	Step       string `json:"step"`
	Status     State  `json:"status"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

// Task is what a step function gets for one host.
type Task struct {
	Host host.Host
	// Log is the host's log file (secrets redacted).
	Log io.Writer
	hr  *hostRun
	r   *Runner
}

// Status sets the host's live status text and logs it.
func (t *Task) Status(format string, args ...any) {
	msg := t.r.opts.Redactor.String(fmt.Sprintf(format, args...))
	t.hr.mu.Lock()
	t.hr.last = msg
	step := t.hr.step
	t.hr.mu.Unlock()
	fmt.Fprintf(t.Log, "-- %s\n", msg)
	t.r.display.status(t.hr, step, msg)
}

// New creates the run directory and one log file per host.
func New(opts Options, hosts []host.Host) (*Runner, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Redactor == nil {
		opts.Redactor = &Redactor{}
	}
	r := &Runner{opts: opts, started: opts.Now()}
	if opts.LogDir != "" {
		r.runDir = filepath.Join(opts.LogDir, r.started.Format("20060102-150405.000"))
		if err := os.MkdirAll(r.runDir, 0o700); err != nil {
			return nil, fmt.Errorf("log dir: %w", err)
		}
	}
	for _, h := range hosts {
		hr := &hostRun{h: h, state: Pending}
		var w io.Writer = io.Discard
		if r.runDir != "" {
			f, err := os.OpenFile(filepath.Join(r.runDir, safeFileName(h.Name())+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("log dir: %w", err)
			}
			hr.logFile, hr.logBuf = f, newFlushWriter(f)
			w = hr.logBuf
		}
		hr.log = opts.Redactor.Writer(w)
		hr.log.OnLine = func(line string) {
			if strings.HasPrefix(line, "-- ") {
				return
			}
			hr.mu.Lock()
			hr.last = line
			hr.mu.Unlock()
		}
		r.hosts = append(r.hosts, hr)
	}
	if opts.Status != nil && !opts.Live {
		r.status = newFlushWriter(opts.Status)
	}
	r.display = newDisplay(r)
	r.flusher = startFlusher(r.flush)
	return r, nil
}

// flush writes out the buffered progress lines and host logs.
func (r *Runner) flush() {
	if r.status != nil {
		r.status.Flush()
	}
	for _, hr := range r.hosts {
		if hr.logBuf != nil {
			hr.logBuf.Flush()
		}
	}
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._@-]`)

func safeFileName(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

// RunDir is where this run's logs are.
func (r *Runner) RunDir() string { return r.runDir }

// Close flushes and closes the log files and stops the live display.
func (r *Runner) Close() error {
	if r.flusher != nil {
		r.flusher.stop()
	}
	if r.display != nil {
		r.display.stop()
	}
	for _, hr := range r.hosts {
		hr.log.Flush()
	}
	r.flush()
	for _, hr := range r.hosts {
		if hr.logFile != nil {
			hr.logFile.Close()
		}
	}
	return nil
}

// Step describes one unit of work that runs on a set of hosts.
type Step struct {
	Name string
	// Hosts limits the step to these host names; nil means all.
	Hosts []string
	// Needs lists hosts that must not have failed for the step to start.
	Needs []string
	Do    func(ctx context.Context, t *Task) error
}

// Run executes one step. It returns an error only when the step as a whole
// could not start (a needed host failed); per-host failures are recorded.
func (r *Runner) Run(ctx context.Context, s Step) error {
	for _, need := range s.Needs {
		hr := r.find(need)
		if hr != nil && r.stateOf(hr) == Failed {
			reason := fmt.Sprintf("not started: %s failed", need)
			for _, t := range r.targets(s) {
				r.record(t, s.Name, Skipped, 0, fmt.Errorf("%s", reason))
			}
			return fmt.Errorf("step %s %s", s.Name, reason)
		}
	}
	targets := r.targets(s)
	limit := r.opts.Parallel
	if limit <= 0 || limit > len(targets) {
		limit = len(targets)
	}
	sem := make(chan struct{}, max(limit, 1))
	var wg sync.WaitGroup
	// A host's goroutine starts when its turn comes, not before: 200
	// goroutines parked on the semaphore each held a stack of their own.
	for _, hr := range targets {
		if r.stateOf(hr) == Failed {
			r.record(hr, s.Name, Skipped, 0, fmt.Errorf("not started: failed earlier"))
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			r.record(hr, s.Name, Failed, 0, fmt.Errorf("%s: not started: %w", hr.h.Name(), ctx.Err()))
			continue
		}
		wg.Add(1)
		go func(hr *hostRun) {
			defer wg.Done()
			defer func() { <-sem }()
			r.runOne(ctx, hr, s)
		}(hr)
	}
	wg.Wait()
	if r.status != nil {
		r.status.Flush()
	}
	return nil
}

func (r *Runner) runOne(ctx context.Context, hr *hostRun, s Step) {
	t0 := r.opts.Now()
	hr.mu.Lock()
	hr.state, hr.step, hr.stepT0, hr.last = Running, s.Name, t0, ""
	hr.mu.Unlock()
	r.display.event(hr, s.Name, Running, 0, nil)
	fmt.Fprintf(hr.log, "-- step %s started %s\n", s.Name, t0.Format(time.RFC3339))
	err := s.Do(ctx, &Task{Host: hr.h, Log: hr.log, hr: hr, r: r})
	hr.log.Flush()
	d := r.opts.Now().Sub(t0)
	if err != nil {
		err = fmt.Errorf("%s: %w", hr.h.Name(), err)
		fmt.Fprintf(hr.log, "-- step %s FAILED after %s: %v\n", s.Name, d.Round(time.Millisecond), err)
		r.record(hr, s.Name, Failed, d, err)
		return
	}
	fmt.Fprintf(hr.log, "-- step %s ok after %s\n", s.Name, d.Round(time.Millisecond))
	r.record(hr, s.Name, OK, d, nil)
}

func (r *Runner) record(hr *hostRun, step string, st State, d time.Duration, err error) {
	hr.mu.Lock()
	sr := StepResult{Step: step, Status: st, DurationMS: d.Milliseconds()}
	if err != nil {
		sr.Error = r.opts.Redactor.String(err.Error())
	}
	hr.steps = append(hr.steps, sr)
	hr.elapsed += d
	switch {
	case st == Failed:
		if hr.err == nil {
			hr.err = err
			hr.exitCode = host.ExitCode(err)
		}
		hr.state = Failed
	case st == Skipped && hr.state != Failed:
		hr.state = Skipped
		if hr.err == nil {
			hr.err = err
		}
	case st == OK && hr.state != Failed:
		hr.state = OK
	}
	hr.mu.Unlock()
	if st != Running {
		r.display.event(hr, step, st, d, err)
	}
}

func (r *Runner) targets(s Step) []*hostRun {
	if s.Hosts == nil {
		return r.hosts
	}
	var out []*hostRun
	for _, n := range s.Hosts {
		if hr := r.find(n); hr != nil {
			out = append(out, hr)
		}
	}
	return out
}

func (r *Runner) find(name string) *hostRun {
	for _, hr := range r.hosts {
		if hr.h.Name() == name {
			return hr
		}
	}
	return nil
}

func (r *Runner) stateOf(hr *hostRun) State {
	hr.mu.Lock()
	defer hr.mu.Unlock()
	return hr.state
}

// Failed reports whether any host failed.
func (r *Runner) Failed() bool {
	for _, hr := range r.hosts {
		if r.stateOf(hr) == Failed {
			return true
		}
	}
	return false
}
