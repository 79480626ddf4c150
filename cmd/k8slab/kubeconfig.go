package main

import (
	"github.com/k8slab/k8slab/internal/install"
	"github.com/urfave/cli/v2"
)

// kubeconfigCommand writes the cluster's admin kubeconfig again (lost, or
// on another workstation), from the record and admin.conf.
func kubeconfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "kubeconfig",
		Usage: "write <name>.kubeconfig (0600) for the installed cluster; --merge-kubeconfig merges it",
		Flags: append(append(connFlags(), clusterFlags()...), append(installFlags("kubeconfig-dir", "merge-kubeconfig"), acceptedInstallFlags("kubeconfig-dir", "merge-kubeconfig")...)...),
		Action: func(c *cli.Context) error {
			s, cfg, _, err := recordedSession(c, "kubeconfig", false)
			if err != nil {
				return err
			}
			defer s.Close()
			s.recordReached(c.Context, []string{cfg.ControlPlane})
			ictx := installContext(c, s, cfg, nil, nil)
			access, err := ictx.LoadAccess(c.Context)
			if err != nil {
				return noCluster(err)
			}
			k := &install.Kubeconfig{Context: ictx, Access: access}
			if err := k.Run(c.Context); err != nil {
				return &exitError{exitFailed, err}
			}
			return s.finish(nil, nil, nil)
		},
	}
}
