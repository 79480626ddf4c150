package phase

import (
	"context"
	"errors"
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

// meets is a phase that finishes only once every other member of its
// Together has started: run one after the other, they would never finish.
type meets struct {
	name    string
	started chan string
	n       int
	err     error
}

func (m meets) Name() string { return m.name }
func (m meets) Run(ctx context.Context) error {
	m.started <- m.name
	for seen := 1; seen < m.n; {
		select {
		case <-m.started:
			seen++
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return m.err
}
func (m meets) Plan() []Step { return []Step{{Node: "n1", Action: "do " + m.name}} }

func TestTogether(t *testing.T) {
	tests := []struct {
		name        string
		only        []string
		failAt      string
		wantResults string
		wantErr     string
	}{
		{name: "both at once, results in order", wantResults: "cp:ok calico:ok join:ok rollout:ok"},
		{name: "--only one member", only: []string{"join"}, wantResults: "join:ok"},
		{name: "a failing member: the other finishes, the run stops", failAt: "calico", wantResults: "cp:ok calico:failed join:ok", wantErr: "phase calico: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var ran []string
			n := 2
			if len(tt.only) > 0 {
				n = 1
			}
			started := make(chan string, 4)
			mk := func(name string) Phase {
				var err error
				if name == tt.failAt {
					err = errors.New("boom")
				}
				return meets{name: name, started: started, n: n, err: err}
			}
			m := &Manager{Phases: []Phase{fake{name: "cp", ran: &ran}, Together{mk("calico"), mk("join")}, fake{name: "rollout", ran: &ran}}, Only: tt.only}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			results, err := m.Run(ctx)
			var got []string
			for _, r := range results {
				got = append(got, r.Phase+":"+r.Status)
			}
			if strings.Join(got, " ") != tt.wantResults {
				t.Errorf("results %v, want %s", got, tt.wantResults)
			}
			if (err == nil) != (tt.wantErr == "") || err != nil && err.Error() != tt.wantErr {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	m := &Manager{Phases: []Phase{Together{meets{name: "calico"}, meets{name: "join"}}}}
	if plan := m.Plan()["n1"]; strings.Join(plan, ",") != "calico: do calico,join: do join" {
		t.Errorf("plan: %v", plan)
	}
	if err := (&Manager{Phases: m.Phases, Only: []string{"calico+join"}}).Validate(); err == nil {
		t.Error("--only calico+join: accepted; the members are the phases")
	}
}
