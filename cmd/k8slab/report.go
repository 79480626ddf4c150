package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/urfave/cli/v2"
)

// runSummary is the part of a run report (k8slab.dev/report/v1) that
// regression runs compare: total and per-phase durations, and the outcome.
type runSummary struct {
	Command    string `json:"command"`
	DurationMS int64  `json:"duration_ms"`
	OK         bool   `json:"ok"`
	Data       struct {
		Phases []struct {
			Phase      string `json:"phase"`
			Status     string `json:"status"`
			DurationMS int64  `json:"duration_ms"`
		} `json:"phases"`
		Verdict string `json:"verdict"`
	} `json:"data"`
}

func readSummary(path string) (runSummary, error) {
	var s runSummary
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: not a k8slab JSON report: %w", path, err)
	}
	return s, nil
}

// phaseTimes maps "total" and each phase to its duration.
func (s runSummary) phaseTimes() map[string]time.Duration {
	m := map[string]time.Duration{"total": time.Duration(s.DurationMS) * time.Millisecond}
	for _, p := range s.Data.Phases {
		m[p.Phase] += time.Duration(p.DurationMS) * time.Millisecond
	}
	return m
}

// order lists phases as they ran, "total" last.
func order(sums ...runSummary) []string {
	var out []string
	for _, s := range sums {
		for _, p := range s.Data.Phases {
			if !slices.Contains(out, p.Phase) {
				out = append(out, p.Phase)
			}
		}
	}
	return append(out, "total")
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// compareReports prints per-phase times of two runs and the change, so a
// slowdown is visible at a glance.
func compareReports(w io.Writer, a, b runSummary) {
	ta, tb := a.phaseTimes(), b.phaseTimes()
	fmt.Fprintf(w, "%-16s %10s %10s %10s %8s\n", "phase", "a", "b", "change", "")
	for _, p := range order(a, b) {
		da, okA := ta[p]
		db, okB := tb[p]
		switch {
		case !okA:
			fmt.Fprintf(w, "%-16s %10s %10s %10s\n", p, "-", secs(db), "new")
		case !okB:
			fmt.Fprintf(w, "%-16s %10s %10s %10s\n", p, secs(da), "-", "gone")
		default:
			pct := ""
			if da > 0 {
				pct = fmt.Sprintf("%+.0f%%", 100*(db.Seconds()-da.Seconds())/da.Seconds())
			}
			fmt.Fprintf(w, "%-16s %10s %10s %+9.1fs %8s\n", p, secs(da), secs(db), (db - da).Seconds(), pct)
		}
	}
}

// summarize prints min/median/max per phase over runs, and how many failed.
func summarize(w io.Writer, runs []runSummary) (failed int) {
	times := map[string][]time.Duration{}
	for _, r := range runs {
		if !r.OK || r.Data.Verdict == "FAIL" {
			failed++
		}
		for p, d := range r.phaseTimes() {
			times[p] = append(times[p], d)
		}
	}
	fmt.Fprintf(w, "%-16s %4s %10s %10s %10s\n", "phase", "n", "min", "median", "max")
	for _, p := range order(runs...) {
		ds := times[p]
		if len(ds) == 0 {
			continue
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		med := ds[len(ds)/2]
		if len(ds)%2 == 0 {
			med = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
		}
		fmt.Fprintf(w, "%-16s %4d %10s %10s %10s\n", p, len(ds), secs(ds[0]), secs(med), secs(ds[len(ds)-1]))
	}
	fmt.Fprintf(w, "%d runs, %d failed\n", len(runs), failed)
	return failed
}

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:  "report",
		Usage: "compare or summarize JSON reports of earlier runs",
		Subcommands: []*cli.Command{
			{
				Name:      "compare",
				Usage:     "per-phase time differences between two runs",
				ArgsUsage: "a.json b.json",
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return badInput("report compare: want two report files")
					}
					a, err := readSummary(c.Args().Get(0))
					if err != nil {
						return badInput("%v", err)
					}
					b, err := readSummary(c.Args().Get(1))
					if err != nil {
						return badInput("%v", err)
					}
					compareReports(os.Stdout, a, b)
					return nil
				},
			},
			{
				Name:      "summary",
				Usage:     "min/median/max per phase over runs; exit 1 if any run failed",
				ArgsUsage: "report.json...",
				Action: func(c *cli.Context) error {
					if c.NArg() == 0 {
						return badInput("report summary: no report files")
					}
					var runs []runSummary
					for _, p := range c.Args().Slice() {
						r, err := readSummary(p)
						if err != nil {
							return badInput("%v", err)
						}
						runs = append(runs, r)
					}
					if n := summarize(os.Stdout, runs); n > 0 {
						return &exitError{exitFailed, fmt.Errorf("%d of %d runs failed", n, len(runs))}
					}
					return nil
				},
			},
		},
	}
}
