package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/k8slab/k8slab/provision"
)

// component is one Go program set built from the module proxy.
type component struct {
	name    string
	module  string
	version string
	// pkgs maps an output file (relative to the bundle) to its package.
	pkgs    map[string]string
	cgo     bool
	tags    string
	ldflags string
	// staging: the module is k8s.io/kubernetes, whose zip lacks staging/.
	staging bool
}

// components lists everything built for a release.
func components(r provision.Release) []component {
	k8s := map[string]string{}
	for _, b := range []string{"kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"} {
		k8s["bin/"+b] = "k8s.io/kubernetes/cmd/" + b
	}
	return []component{
		{name: "kubernetes", module: "k8s.io/kubernetes", version: r.Kubernetes, pkgs: k8s, staging: true, ldflags: kubernetesLDFlags(r.Kubernetes)},
		// etcd's go.mod replaces ../api etc.; a wrapper module ignores those
		// replaces and uses the published modules instead.
		{name: "etcd", module: "go.etcd.io/etcd/server/v3", version: r.Etcd, pkgs: map[string]string{"bin/etcd": "go.etcd.io/etcd/server/v3"}},
		{name: "etcdctl", module: "go.etcd.io/etcd/etcdctl/v3", version: r.Etcd, pkgs: map[string]string{"bin/etcdctl": "go.etcd.io/etcd/etcdctl/v3"}},
		{name: "containerd", module: "github.com/containerd/containerd/v2", version: r.Containerd, tags: "no_btrfs no_devmapper no_zfs",
			ldflags: "-X github.com/containerd/containerd/v2/version.Version=" + r.Containerd,
			pkgs: map[string]string{
				"bin/containerd":              "github.com/containerd/containerd/v2/cmd/containerd",
				"bin/containerd-shim-runc-v2": "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
				"bin/ctr":                     "github.com/containerd/containerd/v2/cmd/ctr",
			}},
		// runc needs cgo (nsenter); static so it runs on any node's libc.
		{name: "runc", module: "github.com/opencontainers/runc", version: r.Runc, cgo: true, tags: "seccomp netgo osusergo",
			ldflags: "-X main.version=" + strings.TrimPrefix(r.Runc, "v") + " -extldflags -static",
			pkgs:    map[string]string{"bin/runc": "github.com/opencontainers/runc"}},
		{name: "cni-plugins", module: "github.com/containernetworking/plugins", version: r.CNIPlugins,
			pkgs: map[string]string{
				"cni/bridge":     "github.com/containernetworking/plugins/plugins/main/bridge",
				"cni/loopback":   "github.com/containernetworking/plugins/plugins/main/loopback",
				"cni/host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
				"cni/portmap":    "github.com/containernetworking/plugins/plugins/meta/portmap",
			}},
		{name: "crictl", module: "sigs.k8s.io/cri-tools", version: r.Crictl,
			ldflags: "-X sigs.k8s.io/cri-tools/pkg/version.Version=" + r.Crictl,
			pkgs:    map[string]string{"bin/crictl": "sigs.k8s.io/cri-tools/cmd/crictl"}},
		{name: "coredns", module: "github.com/coredns/coredns", version: r.CoreDNS,
			pkgs: map[string]string{"work/coredns": "github.com/coredns/coredns"}},
	}
}

// kubernetesLDFlags sets the version variables the release build sets;
// without them binaries report v0.0.0 and kubeadm's preflight fails.
func kubernetesLDFlags(v string) string {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	flags := []string{"-s", "-w"}
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags,
			"-X", pkg+".gitVersion="+v, "-X", pkg+".gitMajor="+parts[0], "-X", pkg+".gitMinor="+parts[1],
			"-X", pkg+".gitTreeState=clean", "-X", pkg+".buildDate=1970-01-01T00:00:00Z",
			"-X", pkg+".gitCommit=0000000000000000000000000000000000000000")
	}
	return strings.Join(flags, " ")
}

type builder struct {
	out, work string
	logf      func(string, ...any)
}

// build compiles the component's missing outputs in a wrapper module.
func (b *builder) build(ctx context.Context, c component) error {
	var missing []string
	for out := range c.pkgs {
		if _, err := os.Stat(b.path(out)); err != nil {
			missing = append(missing, out)
		}
	}
	if len(missing) == 0 {
		b.logf("%s %s: cached", c.name, c.version)
		return nil
	}
	dir := filepath.Join(b.work, c.name+"-"+c.version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	gomod := fmt.Sprintf("module k8slab.local/build/%s\n\ngo 1.25\n\nrequire %s %s\n", c.name, c.module, c.version)
	if c.staging {
		rep, err := stagingReplaces(ctx, c.module, c.version)
		if err != nil {
			return err
		}
		gomod += rep
	}
	if err := writeIfChanged(filepath.Join(dir, "go.mod"), gomod); err != nil {
		return err
	}
	if err := writeIfChanged(filepath.Join(dir, "tools.go"), "package build\n"); err != nil {
		return err
	}
	for _, out := range missing {
		start := time.Now()
		b.logf("%s %s: building %s", c.name, c.version, out)
		dst := b.path(out)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		args := []string{"build", "-trimpath", "-o", dst + ".tmp"}
		if c.tags != "" {
			args = append(args, "-tags", c.tags)
		}
		if c.ldflags != "" {
			args = append(args, "-ldflags", c.ldflags)
		}
		args = append(args, c.pkgs[out])
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		cgo := "0"
		if c.cgo {
			cgo = "1"
		}
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOFLAGS=-mod=mod", "GOWORK=off")
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: go build %s: %v\n%s", c.name, c.pkgs[out], err, tail(string(o), 30))
		}
		if err := os.Rename(dst+".tmp", dst); err != nil {
			return err
		}
		b.logf("%s: built in %s", out, time.Since(start).Round(time.Second))
	}
	return nil
}

// path maps "work/x" to the scratch directory, everything else into the bundle.
func (b *builder) path(out string) string {
	if rest, ok := strings.CutPrefix(out, "work/"); ok {
		return filepath.Join(b.work, "out", rest)
	}
	return filepath.Join(b.out, out)
}

// stagingReplaces points each ./staging module of k8s.io/kubernetes at
// its published v0.X.Y release.
func stagingReplaces(ctx context.Context, module, version string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", module+"@"+version).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", module, version, err)
	}
	var info struct{ GoMod string }
	if err := json.Unmarshal(out, &info); err != nil {
		return "", err
	}
	data, err := os.ReadFile(info.GoMod)
	if err != nil {
		return "", err
	}
	staging := "v0." + strings.TrimPrefix(version, "v1.")
	var b strings.Builder
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[1] == "=>" && strings.HasPrefix(f[2], "./staging/") {
			fmt.Fprintf(&b, "replace %s => %s %s\n", f[0], f[0], staging)
			n++
		}
	}
	if n == 0 {
		return "", fmt.Errorf("%s@%s: no staging replaces found in %s", module, version, info.GoMod)
	}
	return b.String(), nil
}

func writeIfChanged(path, content string) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == content {
		return nil
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
