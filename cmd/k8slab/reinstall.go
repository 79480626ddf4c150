package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/install"
	"github.com/k8slab/k8slab/internal/phase"
	"github.com/urfave/cli/v2"
)

// reinstallCommand is reset (Kubernetes state only) then install with the
// cluster's recorded settings, in one locked run: provisioning finds the
// nodes converged and skips, so only kubeadm, etcd and Calico work again.
func reinstallCommand() *cli.Command {
	return &cli.Command{
		Name:  "reinstall",
		Usage: "reset Kubernetes (keeping OS preparation, containerd, binaries, images) and install again",
		// installContext reads --force (reinstall follows the record, so
		// it never differs); --fix-machine-id comes with clusterFlags.
		Flags: append(append(append(append(connFlags(), clusterFlags()...), resetFlags()...),
			installFlags("artifacts", "mirror", "wait", "join-parallel", "network-first", "wait-timeout", "kubeconfig-dir", "fix-machine-id", "merge-kubeconfig")...),
			&cli.BoolFlag{Name: "force", Hidden: true}),
		Action: func(c *cli.Context) error {
			mirrors, err := parseMirrors(c.StringSlice("mirror"))
			if err != nil {
				return err
			}
			s, cfg, bundle, err := recordedSession(c, "reinstall", true)
			if err != nil {
				return err
			}
			defer s.Close()
			if !s.recorded {
				return &exitError{exitNoCluster, fmt.Errorf("host %s: no cluster recorded (%s): nothing to reinstall; k8slab install makes one", cfg.ControlPlane, cluster.RecordPath)}
			}
			ictx := installContext(c, s, cfg, bundle, mirrors)
			reset := install.ResetPhases(ictx, install.ResetOptions{NoBackup: c.Bool("no-backup")})
			printDestroys(cfg, reset)
			if err := confirm(c, cfg.Name); err != nil {
				return err
			}
			start := time.Now()
			m := &phase.Manager{Phases: append(reset, install.Phases(ictx)...), Log: s.runner.StatusWriter()}
			results, runErr := m.Run(c.Context)
			err = s.finish(map[string]map[string]any{"": {"phases": results}}, runErr, func() {
				printPhases(results)
				fmt.Printf("reinstall took %s\n", time.Since(start).Round(time.Second))
			})
			return runExit(runErr, err)
		},
	}
}

func printPhases(results []phase.Result) {
	for _, r := range results {
		// A failed phase's first line names it; the whole error is said
		// once, on stderr.
		msg, _, _ := strings.Cut(r.Error, "\n")
		fmt.Printf("phase %-14s %-7s %s %s\n", r.Phase, r.Status, (time.Duration(r.DurationMS) * time.Millisecond).Round(100*time.Millisecond), msg)
	}
}

// runExit maps a run's outcome to the documented exit codes.
func runExit(runErr, finishErr error) error {
	var incomplete *install.RolloutIncomplete
	var mismatch *install.RecordMismatch
	switch {
	case errors.As(runErr, &incomplete):
		return &exitError{exitIncomplete, runErr}
	case errors.As(runErr, &mismatch):
		return &exitError{exitBadInput, runErr}
	case runErr != nil:
		return &exitError{exitFailed, runErr}
	}
	return finishErr
}
