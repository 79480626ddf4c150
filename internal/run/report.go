package run

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// ReportVersion changes when the JSON schema changes incompatibly, so
// scripts that parse reports can check what they read.
const ReportVersion = "k8slab.dev/report/v1"

// Report is the machine-readable result of a run (--output json).
type Report struct {
	Version    string    `json:"version"`
	Command    string    `json:"command"`
	Started    time.Time `json:"started"`
	DurationMS int64     `json:"duration_ms"`
	OK         bool      `json:"ok"`
	// Error is why the run failed when no one host's error says it (a
	// refusal, a cluster-level step, a timeout, an interrupt).
	Error  string       `json:"error,omitempty"`
	RunDir string       `json:"run_dir,omitempty"`
	Hosts  []HostReport `json:"hosts"`
	// Data is run-wide payload (e.g. install's per-phase results), given
	// to Report under the empty host name.
	Data map[string]any `json:"data,omitempty"`
}

// HostReport is one host's outcome.
type HostReport struct {
	Host       string         `json:"host"`
	Status     State          `json:"status"`
	ExitCode   int            `json:"exit_code"`
	DurationMS int64          `json:"duration_ms"`
	Error      string         `json:"error,omitempty"`
	Steps      []StepResult   `json:"steps"`
	Data       map[string]any `json:"data,omitempty"`
}

// Report builds the report; data adds per-host payloads (exec output,
// facts) keyed by host name. runErr is the run's own outcome: a run that
// failed is never ok, even when every host's steps were.
func (r *Runner) Report(data map[string]map[string]any, runErr error) Report {
	rep := Report{
		Version:    ReportVersion,
		Command:    r.opts.Command,
		Started:    r.started,
		DurationMS: r.opts.Now().Sub(r.started).Milliseconds(),
		OK:         !r.Failed() && runErr == nil,
		RunDir:     r.runDir,
		Data:       data[""],
	}
	if runErr != nil {
		rep.Error = r.opts.Redactor.String(runErr.Error())
	}
	for _, hr := range r.hosts {
		hr.mu.Lock()
		h := HostReport{
			Host:       hr.h.Name(),
			Status:     hr.state,
			ExitCode:   hr.exitCode,
			DurationMS: hr.elapsed.Milliseconds(),
			Steps:      append([]StepResult(nil), hr.steps...),
			Data:       data[hr.h.Name()],
		}
		if hr.err != nil {
			h.Error = r.opts.Redactor.String(hr.err.Error())
		}
		if h.Status == Pending {
			// The run is over: a host it never got to is not "pending".
			h.Status, h.Error = Skipped, "no step of this run ran on this host"
		}
		hr.mu.Unlock()
		rep.Hosts = append(rep.Hosts, h)
	}
	return rep
}

// WriteJSON writes the report; secrets are masked in every string field,
// including free-form data, by redacting the encoded document.
func (r *Runner) WriteJSON(w io.Writer, rep Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, r.opts.Redactor.String(string(b))+"\n")
	return err
}

// WriteSummary prints one line per host: status, exit code, time, first error.
func (r *Runner) WriteSummary(w io.Writer, rep Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATUS\tEXIT\tTIME\tERROR")
	failed := 0
	for _, h := range rep.Hosts {
		if h.Status == Failed {
			failed++
		}
		// No command ran (unreachable, refused at login): no exit code,
		// the error says why.
		exit := "-"
		if h.ExitCode >= 0 {
			exit = fmt.Sprint(h.ExitCode)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Host, h.Status, exit,
			(time.Duration(h.DurationMS) * time.Millisecond).String(), h.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "ok"
	if !rep.OK {
		verdict = "FAILED"
		if rep.Error != "" {
			// Said once, where errors go: the command prints it on stderr.
			verdict += " (why: on stderr; in the JSON report with --output json)"
		}
	}
	_, err := fmt.Fprintf(w, "%d hosts, %d failed, %s; logs: %s\nrun %s\n", len(rep.Hosts), failed,
		(time.Duration(rep.DurationMS) * time.Millisecond).String(), orNone(rep.RunDir), verdict)
	return err
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// Redact masks the run's secrets in s, for output printed outside the report.
func (r *Runner) Redact(s string) string { return r.opts.Redactor.String(s) }

// AddSecret masks secrets made during the run (join tokens) from here on,
// in logs, terminal output and JSON.
func (r *Runner) AddSecret(secrets ...string) { r.opts.Redactor.Add(secrets...) }

// StatusWriter is where run-level messages go (stderr), or io.Discard;
// each write shows at once, after the progress lines before it.
func (r *Runner) StatusWriter() io.Writer {
	switch {
	case r.opts.Status == nil:
		return io.Discard
	case r.status != nil:
		return immediate{r.status}
	}
	return r.opts.Status
}
