// Command k8slab installs Kubernetes on lab machines over SSH.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime/pprof"
	"sync/atomic"
	"syscall"

	"github.com/k8slab/k8slab/internal/run"

	"github.com/go-logr/logr"
	"github.com/urfave/cli/v2"
	"k8s.io/klog/v2"
)

// Set by the Makefile with -ldflags -X.
var (
	version = "dev"
	commit  = "unknown"
)

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "k8slab",
		Usage:                "install Kubernetes on lab machines over SSH, natively and in parallel",
		Version:              version + " (commit " + commit + ")",
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Action:               unknownCommand,
		Commands: []*cli.Command{
			versionCommand(),
			execCommand(),
			factsCommand(),
			installCommand(), resetCommand(), verifyCommand(), reinstallCommand(), kubeconfigCommand(), reportCommand(),
			planCommand(),
			labCommand(), fabricCommand(), importCommand(),
			completionCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main decides the exit code
	}
	app.OnUsageError = onUsageError(app.Flags)
	usageErrors(app.Commands)
	completeAll(app)
	return app
}

// quietClientGo stops client-go's own logging: it reports retries through
// klog, straight to stderr and in the middle of k8slab's progress lines
// ("Unexpected error when reading response body" during a rollout on a
// saturated control plane). Every error that matters comes back to
// k8slab as a returned error, reported with its node and phase.
func quietClientGo() {
	klog.SetLogger(logr.Discard())
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// K8SLAB_CPUPROFILE=FILE writes a CPU profile of the run (go tool
	// pprof), for finding where a run's workstation CPU goes.
	if f := os.Getenv("K8SLAB_CPUPROFILE"); f != "" {
		if out, err := os.Create(f); err == nil {
			pprof.StartCPUProfile(out)
		}
	}
	quietClientGo()
	err := newApp().RunContext(ctx, os.Args)
	pprof.StopCPUProfile()
	code := exitCode(err)
	if err != nil && wantsJSON(os.Args) && !reportWritten.Load() {
		// Scripts asked for JSON get JSON for every outcome, refusals too.
		writeErrorJSON(os.Stdout, code, err)
	}
	os.Exit(code)
}

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintln(os.Stderr, "k8slab:", ee.err)
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "k8slab:", err)
	// Flag parsing and unknown commands are bad input too.
	return exitBadInput
}

// reportWritten is set once a run's report is on stdout: the error that
// follows it is in the report already.
var reportWritten atomic.Bool

// wantsJSON: --output json (or --output=json) on the command line.
func wantsJSON(args []string) bool {
	for i, a := range args {
		if a == "--output=json" || a == "-output=json" || (a == "--output" || a == "-output") && i+1 < len(args) && args[i+1] == "json" {
			return true
		}
	}
	return false
}

// fieldPrefix is an input error's leading field name: "pod-cidr: ...",
// "--nodes: ...".
var fieldPrefix = regexp.MustCompile(`^-{0,2}([a-z][a-z0-9-]*): `)

// writeErrorJSON is the report of a run that ended before it had one:
// {"ok": false, "exit_code": 2, "error": {"field": "pod-cidr", "message": ...}}.
func writeErrorJSON(w io.Writer, code int, err error) {
	msg := err.Error()
	var ee *exitError
	if errors.As(err, &ee) {
		msg = ee.err.Error()
	}
	e := map[string]string{"message": msg}
	if m := fieldPrefix.FindStringSubmatch(msg); m != nil && code == exitBadInput {
		e["field"] = m[1]
	}
	b, _ := json.MarshalIndent(map[string]any{"version": run.ReportVersion, "ok": false, "exit_code": code, "error": e}, "", "  ")
	fmt.Fprintln(w, string(b))
}
