package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/kubespray"
	"github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"
)

// importCommand turns a kubespray inventory into a k8slab cluster file, so
// a user can leave kubespray for good: installing from the file is
// installing from the inventory.
func importCommand() *cli.Command {
	return &cli.Command{
		Name:  "import",
		Usage: "convert another installer's description into a k8slab cluster file",
		Subcommands: []*cli.Command{{
			Name:      "kubespray",
			Usage:     "write the cluster file equivalent to a kubespray inventory and its group_vars (what k8slab ignores, as comments)",
			ArgsUsage: "INVENTORY",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "-", Usage: "cluster file to write (- : standard output)"},
			},
			Action: func(c *cli.Context) error {
				// `import kubespray PATH -o FILE`, as the issue and kubespray
				// users write it: urfave/cli stops at the first argument, so
				// an -o after it is read here.
				out := c.String("output")
				var args []string
				for a := c.Args().Slice(); len(a) > 0; a = a[1:] {
					switch {
					case (a[0] == "-o" || a[0] == "--output") && len(a) > 1:
						out, a = a[1], a[1:]
					case strings.HasPrefix(a[0], "--output="):
						out = strings.TrimPrefix(a[0], "--output=")
					default:
						args = append(args, a[0])
					}
				}
				if len(args) != 1 {
					return badInput("import kubespray: give one inventory (inventory.cfg, hosts.ini or hosts.yaml)")
				}
				path := args[0]
				inv, err := kubespray.Load(path)
				if err != nil {
					return badInput("%s:\n%v", path, err)
				}
				b, err := importedFile(path, inv)
				if err != nil {
					return err
				}
				if out != "-" {
					if _, err := os.Stat(out); err == nil {
						return badInput("--output %s exists: k8slab does not overwrite a file you have", out)
					}
					return os.WriteFile(out, b, 0o644)
				}
				_, err = os.Stdout.Write(b)
				return err
			},
		}},
	}
}

// importedFile is the cluster file with a header saying where it came
// from, what was left out and why, and how to give the SSH settings a
// cluster file does not hold.
func importedFile(path string, inv *kubespray.Result) ([]byte, error) {
	cfg := *inv.Config
	cfg.APIVersion, cfg.Kind = cluster.APIVersion, cluster.Kind
	body, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var h strings.Builder
	fmt.Fprintf(&h, "# Imported by k8slab from the kubespray inventory %s.\n", path)
	if len(inv.KeyFiles) > 0 {
		fmt.Fprintf(&h, "# SSH keys (not part of a cluster file): --ssh-key %s\n", strings.Join(inv.KeyFiles, " --ssh-key "))
	}
	if inv.Password != "" {
		h.WriteString("# The inventory's become password is not copied here: give it with K8SLAB_SSH_PASSWORD or --ask-password.\n")
	}
	if len(inv.Ignored) > 0 {
		h.WriteString("# Ignored from the inventory:\n")
		for _, i := range inv.Ignored {
			fmt.Fprintf(&h, "#   %s\n", i)
		}
	}
	return append([]byte(h.String()), body...), nil
}
