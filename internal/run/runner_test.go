package run

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/host"
)

// fakeHost is a test double: Run calls the test's function.
type fakeHost struct {
	name string
	run  func(ctx context.Context, cmd host.Cmd) error
}

func (f *fakeHost) Name() string                                       { return f.name }
func (f *fakeHost) Run(ctx context.Context, cmd host.Cmd) error        { return f.run(ctx, cmd) }
func (f *fakeHost) Upload(context.Context, host.File, io.Reader) error { return nil }
func (f *fakeHost) ReadFile(context.Context, string) ([]byte, error)   { return nil, nil }

func hosts(names ...string) []host.Host {
	var hs []host.Host
	for _, n := range names {
		hs = append(hs, &fakeHost{name: n, run: func(ctx context.Context, cmd host.Cmd) error { return nil }})
	}
	return hs
}

func runCmd(cmd string) func(ctx context.Context, t *Task) error {
	return func(ctx context.Context, t *Task) error {
		return t.Host.Run(ctx, host.Cmd{Command: cmd, Stdout: t.Log})
	}
}

func TestFailureSemantics(t *testing.T) {
	cp, w1, w2 := "10.0.0.1", "10.0.0.2", "10.0.0.3"
	tests := []struct {
		name       string
		failOn     map[string]string // host -> step that fails there
		wantStatus map[string]State
		wantJoin   bool // did the join step start at all
	}{
		{
			name:       "all ok",
			wantStatus: map[string]State{cp: OK, w1: OK, w2: OK},
			wantJoin:   true,
		},
		{
			name:       "a worker fails provisioning: others finish, it is skipped afterwards",
			failOn:     map[string]string{w1: "provision"},
			wantStatus: map[string]State{cp: OK, w1: Failed, w2: OK},
			wantJoin:   true,
		},
		{
			name:       "the control plane fails: join never starts",
			failOn:     map[string]string{cp: "init"},
			wantStatus: map[string]State{cp: Failed, w1: Skipped, w2: Skipped},
			wantJoin:   false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var finished atomic.Int32
			var joined atomic.Bool
			r, err := New(Options{Command: "test"}, hosts(cp, w1, w2))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			step := func(name string) func(ctx context.Context, task *Task) error {
				return func(ctx context.Context, task *Task) error {
					if name == "join" {
						joined.Store(true)
					}
					if tt.failOn[task.Host.Name()] == name {
						return &host.ExitError{Code: 7, Stderr: "boom"}
					}
					time.Sleep(10 * time.Millisecond) // the others are still busy when one fails
					finished.Add(1)
					return nil
				}
			}
			r.Run(context.Background(), Step{Name: "provision", Do: step("provision")})
			r.Run(context.Background(), Step{Name: "init", Hosts: []string{cp}, Do: step("init")})
			err = r.Run(context.Background(), Step{Name: "join", Hosts: []string{w1, w2}, Needs: []string{cp}, Do: step("join")})
			if joined.Load() != tt.wantJoin {
				t.Errorf("join started = %v, want %v", joined.Load(), tt.wantJoin)
			}
			if (err == nil) != tt.wantJoin {
				t.Errorf("Run(join) err = %v", err)
			}
			rep := r.Report(nil, nil)
			for _, h := range rep.Hosts {
				if h.Status != tt.wantStatus[h.Host] {
					t.Errorf("%s: status %s, want %s (%+v)", h.Host, h.Status, tt.wantStatus[h.Host], h.Steps)
				}
				if h.Status == Failed {
					if h.ExitCode != 7 || !strings.HasPrefix(h.Error, h.Host+": ") {
						t.Errorf("%s: exit %d, error %q: want 7 and the host as prefix", h.Host, h.ExitCode, h.Error)
					}
				}
			}
			if rep.OK == (len(tt.failOn) > 0) {
				t.Errorf("report OK = %v with failures %v", rep.OK, tt.failOn)
			}
			// A run whose own step failed (a refusal, a cluster-level
			// step, an interrupt) is not ok, whatever its hosts say.
			failed := r.Report(nil, errors.New("phase preflight failed: 4 problems"))
			if failed.OK || failed.Error != "phase preflight failed: 4 problems" {
				t.Errorf("report of a failed run: ok %v, error %q", failed.OK, failed.Error)
			}
			var sum strings.Builder
			r.WriteSummary(&sum, failed)
			if !strings.Contains(sum.String(), "run FAILED (why: on stderr") || strings.Contains(sum.String(), "4 problems") {
				t.Errorf("summary of a failed run:\n%s", sum.String())
			}
		})
	}
}

func TestParallelBound(t *testing.T) {
	var names []string
	for i := 0; i < 20; i++ {
		names = append(names, fmt.Sprintf("h%02d", i))
	}
	r, err := New(Options{Parallel: 3}, hosts(names...))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var cur, peak atomic.Int32
	r.Run(context.Background(), Step{Name: "s", Do: func(ctx context.Context, _ *Task) error {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
		cur.Add(-1)
		return nil
	}})
	if p := peak.Load(); p != 3 {
		t.Errorf("peak concurrency %d, want 3", p)
	}
}

func TestLogsAndReportRedactSecrets(t *testing.T) {
	const secret = "s3cr3t-Passw0rd"
	dir := t.TempDir()
	red := &Redactor{}
	red.Add(secret)
	hs := []host.Host{
		&fakeHost{name: "172.31.3.11", run: func(_ context.Context, c host.Cmd) error {
			// a secret split across writes must still be masked
			io.WriteString(c.Stdout, "token: s3cr3t-")
			io.WriteString(c.Stdout, "Passw0rd done\n")
			return nil
		}},
		&fakeHost{name: "172.31.3.12", run: func(context.Context, host.Cmd) error {
			return fmt.Errorf("sudo: wrong password %s", secret)
		}},
	}
	var status bytes.Buffer
	r, err := New(Options{Command: "exec", LogDir: dir, Redactor: red, Status: &status}, hs)
	if err != nil {
		t.Fatal(err)
	}
	r.Run(context.Background(), Step{Name: "exec", Do: runCmd("x")})
	rep := r.Report(map[string]map[string]any{"172.31.3.11": {"output": "echo " + secret}, "": {"phases": "run-wide"}}, nil)
	if rep.Data["phases"] != "run-wide" {
		t.Errorf("run-wide data missing: %+v", rep.Data)
	}
	var js, sum bytes.Buffer
	r.WriteJSON(&js, rep)
	r.WriteSummary(&sum, rep)
	r.Close()

	logs, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	if len(logs) != 2 {
		t.Fatalf("want one log per host, got %v", logs)
	}
	all := js.String() + sum.String() + status.String()
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		all += string(b)
		if strings.HasSuffix(l, "172.31.3.11.log") && !strings.Contains(string(b), "token: "+Mask+" done") {
			t.Errorf("log of .11 lacks the redacted line:\n%s", b)
		}
	}
	if strings.Contains(all, secret) {
		t.Errorf("secret leaked:\n%s", all)
	}
	var decoded Report
	if err := json.Unmarshal(js.Bytes(), &decoded); err != nil {
		t.Fatalf("JSON report does not parse: %v", err)
	}
	if decoded.OK || decoded.Version != ReportVersion || decoded.Hosts[1].Status != Failed {
		t.Errorf("report: %+v", decoded)
	}
}

func TestContextCancelStopsWaitingHosts(t *testing.T) {
	r, _ := New(Options{Parallel: 1}, hosts("a", "b"))
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	r.Run(ctx, Step{Name: "s", Do: func(ctx context.Context, task *Task) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}})
	for _, h := range r.Report(nil, nil).Hosts {
		if h.Status != Failed || !strings.HasPrefix(h.Error, h.Host+": ") || !strings.Contains(h.Error, "canceled") {
			t.Errorf("%s: %s %q", h.Host, h.Status, h.Error)
		}
	}
}

// syncBuf is a bytes.Buffer safe for the runner's flusher.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Progress lines and logs are buffered, yet a run-level message follows
// the progress lines before it, a finished step's lines are out when Run
// returns, and a running step's log reaches its file within the flush
// interval (tail -f).
func TestBufferedOutputKeepsOrderAndShowsSoon(t *testing.T) {
	var status syncBuf
	dir := t.TempDir()
	r, err := New(Options{Command: "t", Status: &status, LogDir: dir}, hosts("a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	r.Run(context.Background(), Step{Name: "one", Do: func(ctx context.Context, tk *Task) error { return nil }})
	if got := status.String(); strings.Count(got, "one: ok") != 2 {
		t.Fatalf("after Run: %q, want both hosts' ok lines", got)
	}
	fmt.Fprintln(r.StatusWriter(), "==> next")
	if got := status.String(); !strings.HasSuffix(got, "==> next\n") {
		t.Fatalf("run-level message not last: %q", got)
	}
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		r.Run(context.Background(), Step{Name: "two", Hosts: []string{"a"}, Do: func(ctx context.Context, tk *Task) error {
			fmt.Fprintln(tk.Log, "halfway there")
			<-release
			return nil
		}})
		close(done)
	}()
	logFile := filepath.Join(r.RunDir(), "a.log")
	deadline := time.Now().Add(10 * flushInterval)
	for {
		b, _ := os.ReadFile(logFile)
		if strings.Contains(string(b), "halfway there") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a running step's line not in %s after %s: %q", logFile, 10*flushInterval, b)
		}
		time.Sleep(flushInterval / 5)
	}
	close(release)
	<-done
	r.Close()
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), "-- step two ok") {
		t.Errorf("log after Close: %q", b)
	}
}

// A finished run's report never says "pending": a host no step ran on
// (one a command did not need, or one a stopped run never got to) is
// skipped, with the reason; the run stays ok.
func TestReportHostNoStepRanOn(t *testing.T) {
	r, err := New(Options{Command: "kubeconfig"}, hosts("cp", "w1"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Run(context.Background(), Step{Name: "connect", Hosts: []string{"cp"}, Do: func(context.Context, *Task) error { return nil }})
	rep := r.Report(nil, nil)
	got := map[string]HostReport{}
	for _, h := range rep.Hosts {
		got[h.Host] = h
	}
	if got["cp"].Status != OK || got["w1"].Status != Skipped || got["w1"].Error != "no step of this run ran on this host" || !rep.OK {
		t.Errorf("report: ok %v, hosts %+v", rep.OK, rep.Hosts)
	}
	var sum strings.Builder
	r.WriteSummary(&sum, rep)
	if strings.Contains(sum.String(), "pending") {
		t.Errorf("summary:\n%s", sum.String())
	}
}
