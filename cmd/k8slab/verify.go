package main

import (
	"context"
	"fmt"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/install"
	"github.com/k8slab/k8slab/internal/verify"
	"github.com/urfave/cli/v2"
)

// exitVerifyFailed: verify ran and at least one check failed.
const exitVerifyFailed = 3

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "check the installed cluster: named checks, each PASS, FAIL or SKIP with a reason",
		Flags: append(append(append(connFlags(), clusterFlags()...), acceptedInstallFlags()...),
			&cli.DurationFlag{Name: "pod-timeout", Value: 4 * time.Minute, Usage: "limit for each test pod to start and give its verdict (emulated nodes take minutes)"},
			&cli.DurationFlag{Name: "api-wait", Value: 2 * time.Minute, Usage: "how long the API server may time out or refuse before verify judges it down"},
			&cli.DurationFlag{Name: "settle", Value: 2 * time.Minute, Usage: "how long node and pod checks may take to pass after a fresh (re)install (0: judge the first reading)"}),
		Action: func(c *cli.Context) error {
			for _, f := range []string{"pod-timeout", "api-wait"} {
				if c.Duration(f) <= 0 {
					return badInput("--%s: must be positive, got %s", f, c.Duration(f))
				}
			}
			if c.Duration("settle") < 0 {
				return badInput("--settle: must be 0 or more, got %s", c.Duration("settle"))
			}
			s, cfg, _, err := recordedSession(c, "verify", false)
			if err != nil {
				return err
			}
			defer s.Close()
			hosts := map[string]host.Host{}
			for _, cl := range s.clients {
				hosts[cl.Name()] = cl
			}
			// The API server's answer, then the test pods in turn: server,
			// clients, deny, allow.
			ctx, cancel := context.WithTimeout(c.Context, 2*time.Minute+c.Duration("api-wait")+c.Duration("settle")+4*c.Duration("pod-timeout"))
			defer cancel()
			// Every node of the cluster: one verify cannot reach is a finding.
			s.recordReached(ctx, nil)
			cp := hosts[cfg.ControlPlane]
			admin, err := cp.ReadFile(ctx, "/etc/kubernetes/admin.conf")
			if err != nil {
				return noCluster(fmt.Errorf("host %s: no cluster to verify: %w", cfg.ControlPlane, err))
			}
			kc, err := install.KubeClient(cp, admin)
			if err != nil {
				return &exitError{exitFailed, err}
			}
			target := verify.Cluster{Config: cfg, Kube: kc, PodTimeout: c.Duration("pod-timeout"), APIWait: c.Duration("api-wait"), Settle: c.Duration("settle")}
			acc, err := install.NewEtcdAccess(ctx, cfg, hosts)
			switch {
			case err != nil:
				// A failed read of the CA is the etcd check's failure, in
				// the report with the others, not a verify without one.
				accErr := err
				target.Etcd = func(context.Context) (bootstrap.EtcdHealth, error) { return bootstrap.EtcdHealth{}, accErr }
			case acc != nil:
				target.Etcd = func(ctx context.Context) (bootstrap.EtcdHealth, error) {
					return bootstrap.CheckEtcd(ctx, acc.Endpoints, acc.PKI, len(acc.Endpoints), acc.Dial)
				}
			}
			checks := verify.Run(ctx, target)
			failed := verify.Failed(checks)
			verdict := "PASS"
			var checksErr error
			if failed > 0 {
				verdict = "FAIL"
				checksErr = fmt.Errorf("%d checks failed", failed)
			}
			err = s.finish(map[string]map[string]any{"": {"checks": checks, "verdict": verdict}}, checksErr, func() {
				for _, ch := range checks {
					fmt.Printf("%-4s  %-50s %s\n", ch.Status, ch.Name, ch.Reason)
				}
				fmt.Printf("verify: %s (%d of %d checks failed)\n", verdict, failed, len(checks))
			})
			if failed > 0 && !s.runner.Failed() {
				// Checks failed, the nodes all answered: its own exit code.
				return &exitError{exitVerifyFailed, checksErr}
			}
			return err
		},
	}
}
