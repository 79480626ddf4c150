package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/topology"
	"github.com/urfave/cli/v2"
)

// fabricCommand prints the router side of Calico's AS-per-rack peering:
// k8slab knows the racks from the lab file and the pod network from the
// cluster, so the user does not write the leaves' sessions by hand.
func fabricCommand() *cli.Command {
	return &cli.Command{
		Name:  "fabric",
		Usage: "the routers' side of the cluster's BGP peering",
		Subcommands: []*cli.Command{{
			Name:      "config",
			Usage:     "print each rack router's BIRD configuration for Calico's AS-per-rack peering (install --calico-bgp as-per-rack)",
			ArgsUsage: " ",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "lab", Usage: "lab description `FILE` naming routers, racks and nodes (default: the built-in GNS3 reference lab)"},
				&cli.StringFlag{Name: "pod-cidr", Value: cluster.DefaultPodCIDR, Usage: "the cluster's pod network: the only routes taken from or sent to the nodes"},
				&cli.StringFlag{Name: "dialect", Value: topology.Bird2, Usage: "bird2 (BIRD 2) | bird1 (BIRD 1.6, as the blog's routers ran it)"},
				&cli.StringFlag{Name: "router", Usage: "only this router"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return badInput("fabric config takes no arguments (got %q)", c.Args().First())
				}
				spec, err := readLab(c.String("lab"))
				if err != nil {
					return badInput("--lab: %v", err)
				}
				pods, err := netip.ParsePrefix(c.String("pod-cidr"))
				if err != nil || !pods.Addr().Is4() || pods.Masked() != pods {
					return badInput("--pod-cidr: %q is not an IPv4 network address with prefix (e.g. 172.31.128.0/18)", c.String("pod-cidr"))
				}
				d := c.String("dialect")
				if d != topology.Bird1 && d != topology.Bird2 {
					return badInput("--dialect: %q is not bird2 or bird1", d)
				}
				var out []string
				var names []string
				for _, r := range spec.Racks() {
					names = append(names, r.Router)
					if only := c.String("router"); only != "" && r.Router != only {
						continue
					}
					conf, err := topology.FabricConfig(r, d, pods)
					if err != nil {
						return badInput("%v", err)
					}
					out = append(out, fmt.Sprintf("# ===== router %s =====\n%s", r.Router, conf))
				}
				if len(out) == 0 {
					return badInput("--router: %q has no rack of nodes (routers with racks: %s)", c.String("router"), strings.Join(names, ", "))
				}
				fmt.Print(strings.Join(out, "\n"))
				return nil
			},
		}},
	}
}

// labRacks are a lab file's racks as the cluster file writes them: one per
// router bridge with nodes, named after the router.
func labRacks(path string) ([]cluster.Rack, error) {
	spec, err := readLab(path)
	if err != nil {
		return nil, err
	}
	var out []cluster.Rack
	for _, r := range spec.Racks() {
		out = append(out, cluster.Rack{Name: r.Router, Router: r.Local.String(), ASN: r.ASN})
	}
	return out, nil
}
