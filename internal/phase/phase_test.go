package phase

import (
	"context"
	"errors"
	"strings"
	"testing"
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
