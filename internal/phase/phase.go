// Package phase runs an installation as a list of named phases, in the
// manner of k0sctl: each phase is small, does one thing, can be run alone
// (--only), and says what it would do without doing it (plan).
package phase

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Phase is one named part of an installation. Run must be idempotent:
// a re-run converges and skips what is already done.
type Phase interface {
	Name() string
	Run(ctx context.Context) error
}

// Planner is implemented by phases that can list, per node, the steps
// they would take; `k8slab plan` prints them without changing anything.
type Planner interface {
	Plan() []Step
}

// Always is implemented by phases that run even when --only leaves them
// out: read-only phases whose results the others need (preflight's facts).
type Always interface {
	Always() bool
}

// Together is a place in the order where several phases run at the same
// time: each needs what the phases before it did and none needs the
// others (Calico's objects and the joins both need only the API server).
// Each member keeps its own name, --only selection and result.
type Together []Phase

func (g Together) Name() string {
	names := make([]string, len(g))
	for i, p := range g {
		names[i] = p.Name()
	}
	return strings.Join(names, "+")
}

// Run runs the members as a Manager would, at the same time.
func (g Together) Run(ctx context.Context) error {
	_, err := (&Manager{Phases: []Phase{g}}).Run(ctx)
	return err
}

// members is a place in the order as the phases in it.
func members(p Phase) []Phase {
	if g, ok := p.(Together); ok {
		return g
	}
	return []Phase{p}
}

// Step is one planned action on one node ("" for the cluster as a whole).
type Step struct {
	Node   string
	Action string
}

// Result is a phase's outcome, for the report.
type Result struct {
	Phase      string `json:"phase"`
	Status     string `json:"status"` // ok, failed, skipped
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

// Manager runs phases in order.
type Manager struct {
	Phases []Phase
	// Only, when set, restricts the run to these phase names.
	Only []string
	Log  io.Writer
	Now  func() time.Time
}

// Validate refuses --only names that are no phase, before anything runs.
func (m *Manager) Validate() error {
	known := map[string]bool{}
	var names []string
	for _, place := range m.Phases {
		for _, p := range members(place) {
			known[p.Name()] = true
			names = append(names, p.Name())
		}
	}
	for _, o := range m.Only {
		if !known[o] {
			return fmt.Errorf("--only: %q is not a phase (phases: %s)", o, strings.Join(names, ", "))
		}
	}
	return nil
}

func (m *Manager) selected(p Phase) bool {
	if a, ok := p.(Always); len(m.Only) == 0 || ok && a.Always() {
		return true
	}
	for _, o := range m.Only {
		if o == p.Name() {
			return true
		}
	}
	return false
}

// Run executes the selected phases; the first failure stops the run,
// since every phase builds on the ones before it.
func (m *Manager) Run(ctx context.Context) ([]Result, error) {
	now := m.Now
	if now == nil {
		now = time.Now
	}
	var results []Result
	for _, place := range m.Phases {
		var run []Phase
		for _, p := range members(place) {
			if m.selected(p) {
				run = append(run, p)
			}
		}
		if len(run) == 0 {
			continue
		}
		if m.Log != nil {
			if len(run) == 1 {
				fmt.Fprintf(m.Log, "==> %s\n", run[0].Name())
			} else {
				fmt.Fprintf(m.Log, "==> %s (at the same time)\n", Together(run).Name())
			}
		}
		rs := make([]Result, len(run))
		errs := make([]error, len(run))
		var wg sync.WaitGroup
		for i, p := range run {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := now()
				errs[i] = p.Run(ctx)
				rs[i] = Result{Phase: p.Name(), Status: "ok", DurationMS: now().Sub(start).Milliseconds()}
				if errs[i] != nil {
					rs[i].Status, rs[i].Error = "failed", errs[i].Error()
				}
			}()
		}
		wg.Wait()
		results = append(results, rs...)
		for i, err := range errs {
			if err != nil {
				return results, fmt.Errorf("phase %s: %w", run[i].Name(), err)
			}
		}
	}
	return results, nil
}

// Plan lists every selected phase's steps, grouped by node.
func (m *Manager) Plan() map[string][]string {
	out := map[string][]string{}
	for _, place := range m.Phases {
		for _, p := range members(place) {
			m.plan(p, out)
		}
	}
	return out
}

func (m *Manager) plan(p Phase, out map[string][]string) {
	if !m.selected(p) {
		return
	}
	pl, ok := p.(Planner)
	if !ok {
		out[""] = append(out[""], p.Name())
		return
	}
	for _, s := range pl.Plan() {
		out[s.Node] = append(out[s.Node], p.Name()+": "+s.Action)
	}
}
