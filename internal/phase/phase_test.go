package phase

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

type fake struct {
	name   string
	err    error
	always bool
	ran    *[]string
}

func (f fake) Name() string { return f.name }
func (f fake) Run(context.Context) error {
	*f.ran = append(*f.ran, f.name)
	return f.err
}
func (f fake) Always() bool { return f.always }
func (f fake) Plan() []Step { return []Step{{Node: "n1", Action: "do " + f.name}} }

func TestManager(t *testing.T) {
	tests := []struct {
		name    string
		only    []string
		failAt  string
		wantRan string
		wantErr string
	}{
		{name: "all in order", wantRan: "preflight,provision,join"},
		{name: "only one, with the always phase", only: []string{"join"}, wantRan: "preflight,join"},
		{name: "a failure stops the run", failAt: "provision", wantRan: "preflight,provision", wantErr: "phase provision: boom"},
		{name: "unknown phase", only: []string{"jion"}, wantErr: `--only: "jion" is not a phase (phases: preflight, provision, join)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran []string
			mk := func(n string, always bool) Phase {
				var err error
				if n == tt.failAt {
					err = errors.New("boom")
				}
				return fake{name: n, err: err, always: always, ran: &ran}
			}
			m := &Manager{Phases: []Phase{mk("preflight", true), mk("provision", false), mk("join", false)}, Only: tt.only}
			err := m.Validate()
			var results []Result
			if err == nil {
				results, err = m.Run(context.Background())
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(ran, ","); got != tt.wantRan {
				t.Errorf("ran %q, want %q", got, tt.wantRan)
			}
			if tt.failAt != "" && results[len(results)-1].Status != "failed" {
				t.Errorf("results: %+v", results)
			}
		})
	}
	m := &Manager{Phases: []Phase{fake{name: "a", ran: new([]string)}}}
	if p := m.Plan(); len(p["n1"]) != 1 || p["n1"][0] != "a: do a" {
		t.Errorf("plan: %v", p)
	}
}

// overlapping is a phase that meets its partner: it reports when it
// started and waits until the other one has started too, so run one
// after the other the pair would never meet (the wait gives up after
// a while instead of hanging the test).
type overlapping struct {
	name    string
	overlap bool
	err     error
	started chan struct{}
	other   chan struct{}
	log     chan string
}

func (o *overlapping) Name() string       { return o.name }
func (o *overlapping) OverlapsNext() bool { return o.overlap }
func (o *overlapping) Run(ctx context.Context) error {
	if o.err != nil {
		return o.err // before its partner could meet it
	}
	close(o.started)
	select {
	case <-o.other:
		o.log <- o.name + " met"
	case <-ctx.Done():
		o.log <- o.name + " cancelled"
		return ctx.Err()
	case <-time.After(2 * time.Second):
		o.log <- o.name + " alone"
	}
	return nil
}

func TestManagerOverlap(t *testing.T) {
	tests := []struct {
		name      string
		overlap   bool
		failFirst bool
		only      []string
		wantLog   []string
		wantRan   string // the phase after the pair
		wantErr   string
	}{
		{name: "the pair runs at once", overlap: true, wantLog: []string{"calico met", "join met"}, wantRan: "rollout"},
		// join starts after calico ended, so it finds calico started.
		{name: "without the interface, one after the other", overlap: false, wantLog: []string{"calico alone", "join met"}, wantRan: "rollout"},
		{name: "a failure cancels the other and stops the run", overlap: true, failFirst: true, wantLog: []string{"join cancelled"}, wantErr: "phase calico: boom"},
		{name: "only the second: nothing to overlap", overlap: true, only: []string{"join", "rollout"}, wantLog: []string{"join alone"}, wantRan: "rollout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := make(chan string, 4)
			a := &overlapping{name: "calico", overlap: tt.overlap, started: make(chan struct{}), log: log}
			b := &overlapping{name: "join", started: make(chan struct{}), log: log}
			a.other, b.other = b.started, a.started
			if tt.failFirst {
				a.err = errors.New("boom")
			}
			var ran []string
			m := &Manager{Phases: []Phase{a, b, fake{name: "rollout", ran: &ran}}, Only: tt.only}
			results, err := m.Run(context.Background())
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			close(log)
			var got []string
			for l := range log {
				got = append(got, l)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.wantLog) {
				t.Errorf("phases said %q, want %q", got, tt.wantLog)
			}
			if r := strings.Join(ran, ","); r != tt.wantRan {
				t.Errorf("after the pair ran %q, want %q", r, tt.wantRan)
			}
			var names []string
			for _, r := range results {
				names = append(names, r.Phase+" "+r.Status)
			}
			t.Logf("results: %q", names)
			if tt.failFirst && (len(results) != 2 || results[0].Status != "failed" || results[1].Status != "failed") {
				t.Errorf("results %q, want both phases reported failed", names)
			}
		})
	}
}
