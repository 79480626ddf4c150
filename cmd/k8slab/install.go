package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/install"
	"github.com/k8slab/k8slab/internal/kubespray"
	"github.com/k8slab/k8slab/internal/phase"
	"github.com/k8slab/k8slab/provision"
	"github.com/urfave/cli/v2"
)

// Help groups flags by what they are about, as kubectl and k0sctl do.
const (
	catConnection = "Connection"
	catCluster    = "Cluster"
	catInstall    = "Install"
	catOutput     = "Output"
)

// clusterFlags describe the cluster: every command that acts on one takes
// them (reset, verify, kubeconfig describe it so when nothing is recorded).
func clusterFlags() []cli.Flag {
	return categorized(catCluster,
		&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "cluster file (apiVersion k8slab.dev/v1alpha1, kind Cluster); flags override it"},
		&cli.StringFlag{Name: "inventory", Aliases: []string{"i"}, Usage: "a kubespray inventory `PATH` (inventory.cfg, hosts.ini, hosts.yaml) with its group_vars and host_vars; flags override it"},
		&cli.StringFlag{Name: "name", Usage: "cluster name (kubeconfig <name>.kubeconfig)"},
		&cli.StringFlag{Name: "control-plane", Usage: "control plane node (default: the first node)"},
		&cli.StringFlag{Name: "etcd", Usage: "comma list of etcd nodes (default: the first 3 nodes, or the control plane when fewer)"},
		&cli.StringFlag{Name: "workers", Usage: "comma list of worker nodes (default: every node, the control plane included)"},
		&cli.StringFlag{Name: "kubernetes-version", Usage: "default " + provision.DefaultKubernetesVersion},
		&cli.StringFlag{Name: "calico-version", Usage: "default " + cluster.DefaultCalicoVersion},
		&cli.StringFlag{Name: "service-cidr", Usage: "default " + cluster.DefaultServiceCIDR},
		&cli.StringFlag{Name: "pod-cidr", Usage: "default " + cluster.DefaultPodCIDR},
		&cli.StringFlag{Name: "calico-encapsulation", Usage: "IPIP | VXLAN | None (default IPIP, CrossSubnet)"},
		&cli.StringFlag{Name: "kube-proxy-mode", Usage: "iptables | nftables (default: nftables on kernels 5.13 and newer, else iptables)"},
		&cli.StringFlag{Name: "calico-autodetect", Usage: "Calico IP_AUTODETECTION_METHOD (default kubernetes-internal-ip)"},
		&cli.StringFlag{Name: "calico-bgp", Usage: "mesh (default: nodes peer with each other) | as-per-rack (each node peers with its rack's router, pods routed by the fabric; needs --rack or --lab)"},
		&cli.StringSliceFlag{Name: "rack", Usage: "as-per-rack: a rack's router and AS, `NAME=ROUTER@ASN` (e.g. rack1=172.31.3.1@65001; repeatable); a node is in the rack whose router is on its subnet"},
		&cli.StringFlag{Name: "lab", Usage: "as-per-rack: take the racks from a lab description `FILE` (each router with nodes, its address and AS)"},
	)
}

// installFlags are how install works, by name: each command that
// installs takes the ones it uses.
func installFlags(names ...string) []cli.Flag {
	all := categorized(catInstall,
		&cli.StringFlag{Name: "artifacts", Usage: "offline bundle `DIR` built by make bundle", EnvVars: []string{"K8SLAB_ARTIFACTS"}},
		&cli.StringSliceFlag{Name: "mirror", Usage: "without --artifacts: fetch from a mirror, `FROM=TO` URL prefixes (e.g. https://dl.k8s.io=http://mirror.lab/k8s; repeatable)"},
		&cli.StringSliceFlag{Name: "only", Usage: "run only these phases (repeatable), of: " + strings.Join(phaseNames(), ", ")},
		&cli.BoolFlag{Name: "wait", Value: true, Usage: "wait for calico-node, CoreDNS and Ready nodes (--wait=false: apply, report, go on)"},
		&cli.IntFlag{Name: "join-parallel", Usage: "at most this many workers join at once (0: all; a small API server may need a cap)"},
		&cli.BoolFlag{Name: "network-first", Usage: "workers join once calico-node is ready on the control plane, and each holds its --join-parallel slot until calico-node is ready on it (for slow or emulated control planes, where Calico's start competes with the joins; slower on fast nodes)"},
		&cli.DurationFlag{Name: "wait-timeout", Value: 20 * time.Minute, Usage: "limit for each long wait (etcd health, kubeadm init/join, Calico rollout)"},
		&cli.StringFlag{Name: "kubeconfig-dir", Value: ".", Usage: "where <name>.kubeconfig is written"},
		&cli.BoolFlag{Name: "fix-machine-id", Usage: "regenerate /etc/machine-id on nodes that share it with another (cloned VMs)"},
		&cli.BoolFlag{Name: "merge-kubeconfig", Usage: "also merge the cluster into $KUBECONFIG or ~/.kube/config"},
	)
	var out []cli.Flag
	for _, f := range all {
		for _, n := range names {
			if f.Names()[0] == n {
				out = append(out, f)
			}
		}
	}
	return out
}

// acceptedInstallFlags are install's flags that a command does not use
// (all but those it shows), hidden: scripts pass one flag set to
// reinstall and verify alike (scripts/regression.sh), and the help shows
// only what the command uses.
func acceptedInstallFlags(shown ...string) []cli.Flag {
	var out []cli.Flag
	for _, f := range installFlags(installFlagNames...) {
		if slices.Contains(shown, f.Names()[0]) {
			continue
		}
		_, hidden := flagFields(f)
		*hidden = true
		out = append(out, f)
	}
	return out
}

// installFlagNames is every install flag (install and plan take all).
var installFlagNames = []string{"artifacts", "mirror", "only", "wait", "join-parallel", "network-first", "wait-timeout", "kubeconfig-dir", "fix-machine-id", "merge-kubeconfig"}

// categorized puts flags under one heading of the help.
func categorized(cat string, flags ...cli.Flag) []cli.Flag {
	for _, f := range flags {
		category, _ := flagFields(f)
		*category = cat
	}
	return flags
}

// flagFields reaches the help fields every flag type has but no
// interface gives.
func flagFields(f cli.Flag) (category *string, hidden *bool) {
	switch f := f.(type) {
	case *cli.StringFlag:
		return &f.Category, &f.Hidden
	case *cli.StringSliceFlag:
		return &f.Category, &f.Hidden
	case *cli.BoolFlag:
		return &f.Category, &f.Hidden
	case *cli.IntFlag:
		return &f.Category, &f.Hidden
	case *cli.DurationFlag:
		return &f.Category, &f.Hidden
	}
	return new(string), new(bool)
}

// loadCluster builds the cluster description from the file and flags and
// checks all of it; any problem is bad input, before any node is touched.
func loadCluster(c *cli.Context) (*cluster.Config, *provision.Bundle, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, nil, err
	}
	bundle, err := loadBundle(cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, bundle, nil
}

// loadConfig is loadCluster without the bundle, whose checksums take
// seconds on a cold cache.
func loadConfig(c *cli.Context) (*cluster.Config, error) {
	cfg := &cluster.Config{}
	if c.IsSet("file") && c.IsSet("inventory") {
		return nil, badInput("--file and --inventory: give the cluster one way")
	}
	if path := c.String("inventory"); path != "" {
		inv, err := kubespray.Load(path)
		if err != nil {
			return nil, badInput("--inventory %s:\n%v", path, err)
		}
		if c.IsSet("nodes") && !sameHosts(strings.Split(c.String("nodes"), ","), inv.Config.Nodes) {
			return nil, badInput("--nodes and --inventory name different hosts (%s; the inventory: %s): give one", c.String("nodes"), strings.Join(inv.Config.Nodes, ","))
		}
		if len(inv.Ignored) > 0 {
			fmt.Fprintf(os.Stderr, "kubespray inventory: %d settings ignored:\n  %s\n", len(inv.Ignored), strings.Join(inv.Ignored, "\n  "))
		}
		for _, k := range inv.KeyFiles {
			if !c.IsSet("ssh-key") {
				c.Set("ssh-key", k)
			}
		}
		if inv.Password != "" && !c.IsSet("password") && !c.Bool("ask-password") {
			c.Set("password", inv.Password)
		}
		cfg = inv.Config
	}
	if f := c.String("file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, badInput("--file: %v", err)
		}
		if cfg, err = cluster.Parse(b); err != nil {
			return nil, badInput("--file %s: %v", f, err)
		}
	}
	list := func(s string) []string {
		var out []string
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
		return out
	}
	if c.IsSet("nodes") && !c.IsSet("inventory") || len(cfg.Nodes) == 0 {
		cfg.Nodes = list(c.String("nodes"))
	}
	set := func(flag string, dst *string) {
		if c.IsSet(flag) {
			*dst = c.String(flag)
		}
	}
	set("name", &cfg.Name)
	set("control-plane", &cfg.ControlPlane)
	set("kubernetes-version", &cfg.KubernetesVersion)
	set("calico-version", &cfg.Calico.Version)
	set("service-cidr", &cfg.ServiceCIDR)
	set("pod-cidr", &cfg.PodCIDR)
	set("calico-encapsulation", &cfg.Calico.Encapsulation)
	set("calico-autodetect", &cfg.Calico.Autodetect)
	set("kube-proxy-mode", &cfg.KubeProxyMode)
	set("calico-bgp", &cfg.Calico.BGP)
	if c.IsSet("rack") && c.IsSet("lab") {
		return nil, badInput("--rack and --lab: give the racks one way")
	}
	if c.IsSet("rack") {
		racks, err := cluster.ParseRacks(c.StringSlice("rack"))
		if err != nil {
			return nil, badInput("%v", err)
		}
		cfg.Calico.Racks = racks
	}
	if f := c.String("lab"); f != "" {
		racks, err := labRacks(f)
		if err != nil {
			return nil, badInput("--lab: %v", err)
		}
		cfg.Calico.Racks = racks
	}
	set("artifacts", &cfg.Artifacts)
	if c.IsSet("etcd") {
		cfg.Etcd = list(c.String("etcd"))
	}
	if c.IsSet("workers") {
		cfg.Workers = list(c.String("workers"))
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		return nil, badInput("%v", err)
	}
	return cfg, nil
}

// sameHosts: two node lists name the same hosts (users and ports aside).
func sameHosts(a, b []string) bool {
	hosts := func(nodes []string) []string {
		var out []string
		for _, n := range nodes {
			if n = strings.TrimSpace(n); n != "" {
				out = append(out, cluster.Address(n))
			}
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(hosts(a), hosts(b))
}

// loadBundle verifies the --artifacts bundle against its manifest (nil
// without --artifacts).
func loadBundle(cfg *cluster.Config) (*provision.Bundle, error) {
	if cfg.Artifacts == "" {
		return nil, nil
	}
	bundle, err := provision.LoadBundleCached(expand(cfg.Artifacts), expand("~/.cache/k8slab/bundle-sums.json"))
	if err != nil {
		return nil, badInput("%v", err)
	}
	if bundle.Release.Kubernetes != cfg.KubernetesVersion {
		return nil, badInput("--artifacts: the bundle is for Kubernetes %s, not %s", bundle.Release.Kubernetes, cfg.KubernetesVersion)
	}
	return bundle, nil
}

// canonical rewrites role lists to the names the transport uses, so a
// node written as "172.31.3.11" in one flag and "root@172.31.3.11" in
// another is one node.
func canonical(cfg *cluster.Config, names map[string]string) {
	name := func(n string) string { return names[cluster.Address(n)] }
	for i := range cfg.Nodes {
		cfg.Nodes[i] = name(cfg.Nodes[i])
	}
	cfg.ControlPlane = name(cfg.ControlPlane)
	for i := range cfg.Etcd {
		cfg.Etcd[i] = name(cfg.Etcd[i])
	}
	for i := range cfg.Workers {
		cfg.Workers[i] = name(cfg.Workers[i])
	}
}

func installSetup(c *cli.Context, command string) (*session, *install.Context, *phase.Manager, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, nil, nil, err
	}
	mirrors, err := parseMirrors(c.StringSlice("mirror"))
	if err != nil {
		return nil, nil, nil, err
	}
	if n := c.Int("join-parallel"); n < 0 {
		return nil, nil, nil, badInput("--join-parallel: must be 0 (all) or more, got %d", n)
	}
	// Phase names do not depend on the cluster: a misspelt --only is bad
	// input before any lock is taken on the nodes.
	if err := (&phase.Manager{Phases: install.Phases(&install.Context{}), Only: c.StringSlice("only")}).Validate(); err != nil {
		return nil, nil, nil, badInput("%v", err)
	}
	s, err := openSession(c, command, strings.Join(cfg.Nodes, ","))
	if err != nil {
		return nil, nil, nil, err
	}
	// A concurrent run is refused before the bundle's checksums; bad
	// input is still found before any node is touched (the node locks).
	if err := s.lockLocal(command, c.Bool("force-unlock")); err != nil {
		s.Close()
		return nil, nil, nil, err
	}
	bundle, err := loadBundle(cfg)
	if err != nil {
		s.abandon()
		return nil, nil, nil, err
	}
	if err := s.lockNodes(c.Context); err != nil {
		s.Close()
		return nil, nil, nil, err
	}
	canonical(cfg, s.names())
	ictx := installContext(c, s, cfg, bundle, mirrors)
	m := &phase.Manager{Phases: install.Phases(ictx), Only: c.StringSlice("only"), Log: s.runner.StatusWriter()}
	return s, ictx, m, nil
}

// phaseNames are install's phases in the order they run, from the phase
// list itself, so the help cannot drift from it.
func phaseNames() []string {
	var out []string
	for _, p := range install.Phases(&install.Context{}) {
		out = append(out, p.Name())
	}
	return out
}

// installContext is what the install and reset phases share, from the
// flags: the one way every command (install, plan, reinstall, reset,
// kubeconfig) builds it. s is nil for plan, which connects to nothing.
func installContext(c *cli.Context, s *session, cfg *cluster.Config, bundle *provision.Bundle, mirrors map[string]string) *install.Context {
	release, _ := provision.LookupRelease(cfg.KubernetesVersion)
	ictx := &install.Context{
		Cluster: cfg, Release: release, Bundle: bundle, BundleDir: expand(cfg.Artifacts),
		Hosts: map[string]host.Host{}, Wait: c.Duration("wait-timeout"), Now: time.Now,
		WaitRollout: c.Bool("wait"), JoinParallel: c.Int("join-parallel"), NetworkFirst: c.Bool("network-first"), KubeconfigDir: expand(c.String("kubeconfig-dir")),
		// A node registered by --only join without the rollout would keep
		// the taint until some later install's rollout.
		GatePods:     c.Bool("wait") && (len(c.StringSlice("only")) == 0 || slices.Contains(c.StringSlice("only"), "rollout")),
		FixMachineID: c.Bool("fix-machine-id"), Force: c.Bool("force"),
	}
	if c.Bool("merge-kubeconfig") {
		ictx.MergeKubeconfig = os.Getenv("KUBECONFIG")
		if ictx.MergeKubeconfig == "" {
			ictx.MergeKubeconfig = expand("~/.kube/config")
		}
	}
	if s == nil {
		return ictx
	}
	ictx.Runner = s.runner
	if bundle == nil {
		status := s.runner.StatusWriter()
		ictx.Download = &provision.Downloader{Cache: expand("~/.cache/k8slab"), Mirrors: mirrors,
			Progress: func(m string) { fmt.Fprintln(status, "artifacts: "+m) }}
	}
	for _, cl := range s.clients {
		ictx.Hosts[cl.Name()] = cl
	}
	return ictx
}

func installCommand() *cli.Command {
	return &cli.Command{
		Name:  "install",
		Usage: "install Kubernetes on the nodes: preflight, provision, etcd, control plane, joins",
		Flags: append(append(append(connFlags(), clusterFlags()...), installFlags(installFlagNames...)...),
			forceUnlockFlag(),
			&cli.BoolFlag{Name: "force", Usage: "proceed although the cluster was installed with other settings"}),
		Action: func(c *cli.Context) error {
			s, _, m, err := installSetup(c, "install")
			if err != nil {
				return err
			}
			defer s.Close()
			start := time.Now()
			results, runErr := m.Run(c.Context)
			data := map[string]map[string]any{"": {"phases": results}}
			err = s.finish(data, runErr, func() {
				printPhases(results)
				fmt.Printf("install took %s\n", time.Since(start).Round(time.Second))
			})
			return runExit(runErr, err)
		},
	}
}

func planCommand() *cli.Command {
	return &cli.Command{
		Name:  "plan",
		Usage: "print, per node, every phase and step install would run, changing nothing",
		Flags: append(append(connFlags(), clusterFlags()...), installFlags(installFlagNames...)...),
		Action: func(c *cli.Context) error {
			cfg, bundle, err := loadCluster(c)
			if err != nil {
				return err
			}
			m := &phase.Manager{Phases: install.Phases(installContext(c, nil, cfg, bundle, nil)), Only: c.StringSlice("only")}
			if err := m.Validate(); err != nil {
				return badInput("%v", err)
			}
			plan := m.Plan()
			if c.String("output") == "json" {
				return json.NewEncoder(os.Stdout).Encode(plan)
			}
			nodes := make([]string, 0, len(plan))
			for n := range plan {
				if n != phase.ClusterWide {
					nodes = append(nodes, n)
				}
			}
			sort.Strings(nodes)
			if _, ok := plan[phase.ClusterWide]; ok {
				nodes = append([]string{phase.ClusterWide}, nodes...)
			}
			for _, n := range nodes {
				fmt.Println(n + ":")
				for _, step := range plan[n] {
					fmt.Println("  - " + step)
				}
			}
			return nil
		},
	}
}

// parseMirrors reads --mirror FROM=TO pairs.
func parseMirrors(flags []string) (map[string]string, error) {
	m := map[string]string{}
	for _, f := range flags {
		from, to, ok := strings.Cut(f, "=")
		if !ok || !strings.Contains(from, "://") || !strings.Contains(to, "://") {
			return nil, badInput("--mirror %q: want FROM=TO, two URL prefixes", f)
		}
		m[from] = to
	}
	return m, nil
}
