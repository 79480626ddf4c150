package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"text/tabwriter"

	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
	"github.com/urfave/cli/v2"
)

func factsCommand() *cli.Command {
	return &cli.Command{
		Name:  "facts",
		Usage: "show what each node is: OS, kernel, CPUs, memory, swap, default route, cgroups, container runtime",
		Flags: connFlags(),
		Action: func(c *cli.Context) error {
			s, err := openNodeSession(c, "facts")
			if err != nil {
				return err
			}
			defer s.Close()
			var mu sync.Mutex
			facts := map[string]provision.Facts{}
			s.runner.Run(c.Context, oneShot(run.Step{Name: "facts", Do: func(ctx context.Context, t *run.Task) error {
				f, err := provision.GatherFacts(ctx, t.Host)
				if err != nil {
					return err
				}
				mu.Lock()
				facts[t.Host.Name()] = f
				mu.Unlock()
				t.Status("%s %s, %s", f.OSID, f.OSVersion, f.Kernel)
				return nil
			}}))
			data := map[string]map[string]any{}
			for h, f := range facts {
				data[h] = map[string]any{"facts": f}
			}
			return s.finish(data, nil, func() { printFacts(s, facts) })
		},
	}
}

func printFacts(s *session, facts map[string]provision.Facts) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tHOSTNAME\tOS\tKERNEL\tARCH\tCPUS\tMEMORY\tSWAP\tDEFAULT ROUTE\tCGROUP\tCONTAINERD\tKUBELET")
	for _, h := range s.hosts {
		f, ok := facts[h.Name()]
		if !ok {
			continue
		}
		swap := "off"
		if f.SwapOn {
			swap = "on"
		}
		route := "-"
		if f.DefaultIface != "" {
			route = f.DefaultIface + " " + f.DefaultAddr
		}
		cgroup := "unknown"
		if f.CgroupVersion > 0 {
			cgroup = fmt.Sprintf("v%d", f.CgroupVersion)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\t%d\t%dMiB\t%s\t%s\t%s\t%s\t%s\n",
			h.Name(), f.Hostname, f.OSID, f.OSVersion, f.Kernel, f.Arch, f.CPUs, f.MemoryMB, swap, route,
			cgroup, binary(f.Containerd), binary(f.Kubelet))
	}
	tw.Flush()
	fmt.Println()
}

func binary(b provision.Binary) string {
	switch {
	case !b.Present():
		return "absent"
	case b.Version != "":
		return b.Version
	}
	return "present"
}
