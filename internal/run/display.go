package run

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// display shows progress: plain lines for logs and pipes, or one line per
// host redrawn in place on a terminal.
type display interface {
	event(hr *hostRun, step string, st State, d time.Duration, err error)
	// status is a step's progress message (Task.Status).
	status(hr *hostRun, step, msg string)
	stop()
}

func newDisplay(r *Runner) display {
	if r.opts.Status == nil {
		return nopDisplay{}
	}
	if r.opts.Live {
		return newLive(r)
	}
	return &plain{w: r.status, red: r.opts.Redactor}
}

type nopDisplay struct{}

func (nopDisplay) event(*hostRun, string, State, time.Duration, error) {}
func (nopDisplay) status(*hostRun, string, string)                     {}
func (nopDisplay) stop()                                               {}

// plain prints one line per host and event; greppable in CI logs.
type plain struct {
	mu  sync.Mutex
	w   io.Writer
	red *Redactor
}

func (p *plain) event(hr *hostRun, step string, st State, d time.Duration, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case st == Running:
		fmt.Fprintf(p.w, "%s: %s: started\n", hr.h.Name(), step)
	case err != nil:
		fmt.Fprintf(p.w, "%s: %s: %s after %s: %s\n", hr.h.Name(), step, st, d.Round(time.Millisecond), p.red.String(err.Error()))
	default:
		fmt.Fprintf(p.w, "%s: %s: %s in %s\n", hr.h.Name(), step, st, d.Round(time.Millisecond))
	}
}

// status lines are what a CI log needs to tell a slow step from a stuck
// one ("kubeadm init: [wait-control-plane] ...").
func (p *plain) status(hr *hostRun, step, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s: %s: %s\n", hr.h.Name(), step, msg)
}

func (p *plain) stop() {}

// live keeps one status line per host and redraws them every tick.
type live struct {
	r     *Runner
	w     io.Writer
	done  chan struct{}
	wg    sync.WaitGroup
	drawn int
	once  sync.Once
}

func newLive(r *Runner) *live {
	l := &live{r: r, w: r.opts.Status, done: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTicker(150 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-l.done:
				l.draw()
				return
			case <-t.C:
				l.draw()
			}
		}
	}()
	return l
}

func (l *live) event(*hostRun, string, State, time.Duration, error) {}
func (l *live) status(*hostRun, string, string)                     {}

func (l *live) stop() {
	l.once.Do(func() { close(l.done); l.wg.Wait() })
}

var spinner = []string{"|", "/", "-", "\\"}

func (l *live) draw() {
	var b strings.Builder
	if l.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", l.drawn) // back to the first host line
	}
	width := 0
	for _, hr := range l.r.hosts {
		width = max(width, len(hr.h.Name()))
	}
	frame := spinner[int(time.Now().UnixMilli()/150)%len(spinner)]
	for _, hr := range l.r.hosts {
		hr.mu.Lock()
		mark := map[State]string{Pending: ".", Running: frame, OK: "ok", Failed: "FAIL", Skipped: "skip"}[hr.state]
		el := ""
		detail := hr.last
		if hr.state == Running {
			el = time.Since(hr.stepT0).Round(100 * time.Millisecond).String()
		}
		if hr.err != nil {
			detail = hr.err.Error()
		}
		line := fmt.Sprintf("%-*s  %-4s %-10s %6s  %s", width, hr.h.Name(), mark, hr.step, el, l.r.opts.Redactor.String(detail))
		hr.mu.Unlock()
		if len(line) > 160 {
			line = line[:160]
		}
		b.WriteString("\x1b[2K" + line + "\n")
	}
	l.drawn = len(l.r.hosts)
	io.WriteString(l.w, b.String())
}
