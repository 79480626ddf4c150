// Command k8slab installs Kubernetes on lab machines over SSH.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
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
			labCommand(),
			completionCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main decides the exit code
	}
	app.OnUsageError = onUsageError(app.Flags)
	usageErrors(app.Commands)
	return app
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newApp().RunContext(ctx, os.Args)
	os.Exit(exitCode(err))
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
