package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/k8slab/k8slab"
	"github.com/k8slab/k8slab/internal/netns"
	"github.com/k8slab/k8slab/topology"
	"github.com/urfave/cli/v2"
)

func labFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "lab description `FILE` (default: the built-in GNS3 reference lab)"},
		&cli.StringFlag{Name: "name", Usage: "override the lab's name (namespaces are k8slab-<name>-<member>)"},
		&cli.StringFlag{Name: "state-dir", Value: topology.DefaultStateRoot, Usage: "where labs keep keys, configs and logs"},
	}
}

func loadLab(c *cli.Context) (*topology.Lab, error) {
	spec, err := readLab(c.String("file"))
	if err != nil {
		return nil, badInput("--file: %v", err)
	}
	if n := c.String("name"); n != "" {
		spec.Name = n
		if err := spec.Validate(); err != nil {
			return nil, badInput("--name: %v", err)
		}
	}
	lab := topology.New(spec, c.String("state-dir"))
	lab.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	return lab, nil
}

func labCommand() *cli.Command {
	return &cli.Command{
		Name:  "lab",
		Usage: "build the test lab (network namespaces, BIRD routers, sshd nodes) on this machine (root)",
		Subcommands: []*cli.Command{
			{
				Name:  "up",
				Usage: "build the lab and wait until BGP has converged and every node answers SSH",
				Flags: append(labFlags(),
					&cli.BoolFlag{Name: "vms", Usage: "nodes are Debian VMs under QEMU (real kernels for kubeadm) instead of namespaces"},
					&cli.BoolFlag{Name: "containers", Usage: "nodes are Debian systemd containers (systemd-nspawn) on this kernel: native speed, for kubeadm and Calico"},
					&cli.StringFlag{Name: "container-dir", Value: defaultCacheDir("container"), Usage: "with --containers: rootfs and node layers (scripts/container/build-rootfs.sh fills it)", EnvVars: []string{"K8SLAB_CONTAINER_DIR"}},
					&cli.BoolFlag{Name: "fresh", Usage: "with --vms: ignore snapshots, boot every node from a new disk"},
					&cli.StringFlag{Name: "vm-dir", Value: defaultVMDir(), Usage: "with --vms: image and node disks (scripts/vm/build-image.sh fills it)", EnvVars: []string{"K8SLAB_VM_DIR"}},
					&cli.StringFlag{Name: "accel", Value: "auto", Usage: "with --vms: auto (probe KVM, else TCG) | tcg | kvm"},
					&cli.DurationFlag{Name: "boot-timeout", Value: 10 * time.Minute, Usage: "with --vms: how long to wait for every node's SSH"},
					&cli.StringFlag{Name: "calico-peering", Usage: "the leaves also peer with their racks' nodes for Calico's AS-per-rack mode (install --calico-bgp as-per-rack), accepting pod routes within `POD_CIDR`; the configuration is k8slab fabric config's"},
				),
				Action: func(c *cli.Context) error {
					lab, err := loadLab(c)
					if err != nil {
						return err
					}
					if c.Bool("vms") && c.Bool("containers") {
						return badInput("--vms and --containers: choose one kind of node")
					}
					if v := c.String("calico-peering"); v != "" {
						p, err := netip.ParsePrefix(v)
						if err != nil || !p.Addr().Is4() || p.Masked() != p {
							return badInput("--calico-peering: %q is not the pod network (an IPv4 network address with prefix, e.g. 172.31.128.0/18)", v)
						}
						lab.CalicoPeering = p
					}
					if c.Bool("containers") {
						dir := c.String("container-dir")
						lab.Container = &topology.ContainerOptions{RootfsDir: filepath.Join(dir, "rootfs"), NodesDir: filepath.Join(dir, "nodes")}
						if err := lab.Container.CheckRootfs(); err != nil {
							return badInput("%v", err)
						}
					}
					if c.Bool("vms") {
						if a := c.String("accel"); a != "auto" && a != "tcg" && a != "kvm" {
							return badInput("--accel: %q is not auto, tcg or kvm", a)
						}
						lab.VM = &topology.VMOptions{
							ImageDir:    c.String("vm-dir"),
							DiskDir:     filepath.Join(c.String("vm-dir"), "nodes"),
							Fresh:       c.Bool("fresh"),
							Accel:       c.String("accel"),
							BootTimeout: c.Duration("boot-timeout"),
						}
						if err := lab.VM.CheckImage(); err != nil {
							return badInput("%v", err)
						}
					}
					if err := lab.Up(c.Context); err != nil {
						return &exitError{exitFailed, err}
					}
					fmt.Printf("nodes: %s\nuse it: k8slab lab exec -- k8slab facts\n", strings.Join(lab.Spec.NodeAddrs(), ","))
					return nil
				},
			},
			{
				Name:  "down",
				Usage: "stop the lab's processes and remove its namespaces",
				Flags: labFlags(),
				Action: func(c *cli.Context) error {
					lab, err := loadLab(c)
					if err != nil {
						return err
					}
					if err := lab.Down(c.Context); err != nil {
						return &exitError{exitFailed, err}
					}
					fmt.Fprintf(os.Stderr, "lab %s is down\n", lab.Spec.Name)
					return nil
				},
			},
			{
				Name:  "status",
				Usage: "show BGP sessions, routes and sshd reachability",
				Flags: append(labFlags(), &cli.StringFlag{Name: "output", Value: "text", Usage: "text | json"}),
				Action: func(c *cli.Context) error {
					lab, err := loadLab(c)
					if err != nil {
						return err
					}
					st := lab.Status(c.Context)
					if c.String("output") == "json" {
						b, _ := json.MarshalIndent(st, "", "  ")
						fmt.Println(string(b))
					} else {
						printLabStatus(st)
					}
					if !st.Up {
						return &exitError{exitFailed, fmt.Errorf("lab %s is not up", st.Name)}
					}
					return nil
				},
			},
			{
				Name:      "exec",
				Usage:     "run a command in the workstation namespace, with K8SLAB_NODES, K8SLAB_SSH_KEY and K8SLAB_KNOWN_HOSTS set for the lab",
				ArgsUsage: "-- COMMAND [ARGS...]",
				Flags:     labFlags(),
				Action: func(c *cli.Context) error {
					lab, err := loadLab(c)
					if err != nil {
						return err
					}
					args := c.Args().Slice()
					if len(args) == 0 {
						return badInput("lab exec: no command given")
					}
					if _, err := os.Stat(netns.Path(lab.NS(topology.WorkstationName))); err != nil {
						return &exitError{exitFailed, fmt.Errorf("the lab %s is not up (k8slab lab up)", lab.Spec.Name)}
					}
					// "k8slab" means this very binary, installed or not.
					if args[0] == "k8slab" {
						if self, err := os.Executable(); err == nil {
							args[0] = self
						}
					}
					env := append(os.Environ(),
						"K8SLAB_NODES="+strings.Join(lab.Spec.NodeAddrs(), ","),
						"K8SLAB_SSH_KEY="+lab.KeyFile(),
						"K8SLAB_KNOWN_HOSTS="+lab.KnownHostsFile(),
					)
					ipPath, err := exec.LookPath("ip")
					if err != nil {
						return err
					}
					argv := append([]string{"ip", "netns", "exec", lab.NS(topology.WorkstationName)}, args...)
					return syscall.Exec(ipPath, argv, env)
				},
			},
		},
	}
}

func defaultVMDir() string { return defaultCacheDir("vm") }

// defaultCacheDir is where a lab keeps what it builds once and reuses.
func defaultCacheDir(kind string) string {
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "k8slab", kind)
}

func printLabStatus(st topology.Status) {
	state := "up"
	if !st.Up {
		state = "NOT UP"
	}
	fmt.Printf("lab %s: %s\n", st.Name, state)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, r := range st.Routers {
		missing := "all node subnets routed"
		if len(r.Missing) > 0 {
			missing = "missing " + strings.Join(r.Missing, ",")
		}
		fmt.Fprintf(tw, "router %s\tBGP %s\t%s\n", r.Name, sessions(r.Sessions), missing)
		if len(r.NodePeers) > 0 {
			fmt.Fprintf(tw, "\tCalico nodes %s\t\n", sessions(r.NodePeers))
		}
	}
	for _, s := range st.SSH {
		open := "ssh open"
		if !s.Open {
			open = "ssh CLOSED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Member, s.Addr, open)
	}
	tw.Flush()
	for _, i := range st.Issues {
		fmt.Println("issue:", i)
	}
}

// sessions lists BGP sessions as name=state, sorted by name.
func sessions(m map[string]string) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		out = append(out, n+"="+m[n])
	}
	return strings.Join(out, " ")
}

// readLab parses a lab description file; "" is the built-in reference lab.
func readLab(path string) (*topology.Spec, error) {
	b := k8slab.ReferenceLab
	if path != "" {
		var err error
		if b, err = os.ReadFile(path); err != nil {
			return nil, err
		}
	}
	return topology.Parse(b)
}
