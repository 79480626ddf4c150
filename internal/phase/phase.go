// Package phase runs an installation as a list of named phases, in the
// manner of k0sctl: each phase is small, does one thing, can be run alone
// (--only), and says what it would do without doing it (plan).
package phase

import (
	"context"
	"fmt"
	"io"
	"strings"
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
	for _, p := range m.Phases {
		known[p.Name()] = true
		names = append(names, p.Name())
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
	for _, p := range m.Phases {
		if !m.selected(p) {
			continue
		}
		start := now()
		if m.Log != nil {
			fmt.Fprintf(m.Log, "==> %s\n", p.Name())
		}
		err := p.Run(ctx)
		r := Result{Phase: p.Name(), Status: "ok", DurationMS: now().Sub(start).Milliseconds()}
		if err != nil {
			r.Status, r.Error = "failed", err.Error()
			results = append(results, r)
			return results, fmt.Errorf("phase %s: %w", p.Name(), err)
		}
		results = append(results, r)
	}
	return results, nil
}

// Plan lists every selected phase's steps, grouped by node.
func (m *Manager) Plan() map[string][]string {
	out := map[string][]string{}
	for _, p := range m.Phases {
		if !m.selected(p) {
			continue
		}
		pl, ok := p.(Planner)
		if !ok {
			out[ClusterWide] = append(out[ClusterWide], p.Name())
			continue
		}
		for _, s := range pl.Plan() {
			node := s.Node
			if node == "" {
				node = ClusterWide
			}
			out[node] = append(out[node], p.Name()+": "+s.Action)
		}
	}
	return out
}

// ClusterWide is Plan's key for the steps that run against the cluster,
// not on one node.
const ClusterWide = "cluster"
