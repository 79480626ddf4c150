package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/install"
	"github.com/k8slab/k8slab/internal/phase"
	"github.com/k8slab/k8slab/internal/ssh"
	"github.com/k8slab/k8slab/provision"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// recordedSession opens a locked session for a command that acts on an
// installed cluster: the cluster's record on the control plane, when
// there is one, says which nodes and roles it has, so `--nodes <control
// plane>` is enough.
func recordedSession(c *cli.Context, command string, lock bool) (*session, *cluster.Config, *provision.Bundle, error) {
	cfg, bundle, err := loadCluster(c)
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := openSession(c, command, strings.Join(cfg.Nodes, ","))
	if err != nil {
		return nil, nil, nil, err
	}
	if err := s.dialAll(c.Context); err != nil {
		s.abandon()
		return nil, nil, nil, err
	}
	for _, cl := range s.clients {
		if cl.Target().Host != cluster.Address(cfg.ControlPlane) {
			continue
		}
		readStart := time.Now()
		b, err := cl.ReadFile(c.Context, cluster.RecordPath)
		if err != nil {
			break // nothing recorded: the flags describe the cluster
		}
		// A loaded control plane can take tens of seconds to answer
		// before any phase starts: the log says where that time went.
		fmt.Fprintf(s.runner.StatusWriter(), "%s: cluster record read in %s\n", cl.Name(), time.Since(readStart).Round(time.Millisecond))
		rec, err := cluster.Parse(b)
		if err != nil {
			s.Close()
			return nil, nil, nil, fmt.Errorf("host %s: %s: %w", cl.Name(), cluster.RecordPath, err)
		}
		rec.Artifacts = cfg.Artifacts
		if bundle != nil && bundle.Release.Kubernetes != rec.KubernetesVersion {
			s.abandon()
			return nil, nil, nil, badInput("--artifacts: the bundle is for Kubernetes %s, the cluster on %s runs %s", bundle.Release.Kubernetes, cl.Name(), rec.KubernetesVersion)
		}
		cfg = rec
		s.recorded = true
		if !sameHosts(cfg.Nodes, clientNames(s.clients)) {
			// The record knows more nodes than were named: act on all.
			s.Close()
			if s, err = openSession(c, command, strings.Join(cfg.Nodes, ",")); err != nil {
				return nil, nil, nil, err
			}
			s.recorded = true
		}
		break
	}
	if lock {
		if err := s.lock(c.Context, command, c.Bool("force-unlock")); err != nil {
			s.Close()
			return nil, nil, nil, err
		}
	}
	canonical(cfg, s.names())
	return s, cfg, bundle, nil
}

// resetFlags are those of the commands that reset nodes.
func resetFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"},
		&cli.BoolFlag{Name: "no-backup", Usage: "do not snapshot etcd before deleting its data"},
		forceUnlockFlag(),
	}
}

func forceUnlockFlag() cli.Flag {
	return &cli.BoolFlag{Name: "force-unlock", Usage: "clear the nodes' run lock left by a run that is gone"}
}

// printDestroys says, per node, what the reset phases will destroy.
func printDestroys(cfg *cluster.Config, phases []phase.Phase) {
	fmt.Fprintf(os.Stderr, "reset of cluster %s destroys:\n", cfg.Name)
	for _, n := range cfg.Nodes {
		fmt.Fprintf(os.Stderr, "  %s:\n", n)
		for _, p := range phases {
			if r, ok := p.(*install.ResetNodes); ok {
				for _, d := range r.Destroys(n) {
					fmt.Fprintf(os.Stderr, "    - %s\n", d)
				}
			}
		}
	}
}

// confirm asks for the cluster's name on a terminal; scripts pass --yes.
func confirm(c *cli.Context, name string) error {
	if c.Bool("yes") {
		return nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return badInput("reset destroys the cluster: pass --yes (standard input is not a terminal)")
	}
	fmt.Fprintf(os.Stderr, "Type the cluster's name (%s) to reset it: ", name)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(line) != name {
		return badInput("reset: not confirmed, nothing was changed")
	}
	return nil
}

func resetCommand() *cli.Command {
	return &cli.Command{
		Name:  "reset",
		Usage: "undo Kubernetes on the nodes (keeps containerd, binaries and images unless --all)",
		Flags: append(append(append(append(connFlags(), clusterFlags()...), resetFlags()...), acceptedInstallFlags()...),
			&cli.BoolFlag{Name: "all", Usage: "also remove containerd, images, binaries and k8slab's OS settings"}),
		Action: func(c *cli.Context) error {
			s, cfg, _, err := recordedSession(c, "reset", true)
			if err != nil {
				return err
			}
			defer s.Close()
			ictx := installContext(c, s, cfg, nil, nil)
			opts := install.ResetOptions{All: c.Bool("all"), NoBackup: c.Bool("no-backup")}
			phases := install.ResetPhases(ictx, opts)
			printDestroys(cfg, phases)
			if err := confirm(c, cfg.Name); err != nil {
				return err
			}
			start := time.Now()
			m := &phase.Manager{Phases: phases, Log: s.runner.StatusWriter()}
			results, runErr := m.Run(c.Context)
			err = s.finish(map[string]map[string]any{"": {"phases": results}}, runErr, func() {
				printPhases(results)
				fmt.Printf("reset took %s\n", time.Since(start).Round(time.Second))
			})
			return runExit(runErr, err)
		},
	}
}

func clientNames(clients []*ssh.Client) []string {
	var out []string
	for _, c := range clients {
		out = append(out, c.Name())
	}
	return out
}
