// Command k8slab-bundle builds the offline artifact bundle that
// `k8slab install --artifacts DIR` reads: every binary built from source
// through the Go module proxy, the images kubeadm pulls, the Calico
// manifests, and a manifest with a sha256 for every file. Outputs are
// cached: a second run only rebuilds what is missing.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/k8slab/k8slab/internal/fsatomic"
	"github.com/k8slab/k8slab/provision"
)

func main() {
	home, _ := os.UserHomeDir()
	k8s := flag.String("kubernetes-version", provision.DefaultKubernetesVersion, "Kubernetes release")
	out := flag.String("out", "", "bundle directory (default ~/.cache/k8slab/bundle/<version>)")
	work := flag.String("work", filepath.Join(home, ".cache", "k8slab", "build"), "build scratch directory")
	calico := flag.String("calico-dir", "../shared/fixtures/calico", "directory with one folder of release manifests per Calico version")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *out == "" {
		*out = filepath.Join(home, ".cache", "k8slab", "bundle", *k8s)
	}
	start := time.Now()
	if err := run(ctx, *k8s, *out, *work, *calico); err != nil {
		fmt.Fprintln(os.Stderr, "k8slab-bundle:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "bundle %s ready in %s: %s\n", *k8s, time.Since(start).Round(time.Second), *out)
}

func run(ctx context.Context, k8s, out, work, calicoDir string) error {
	r, err := provision.LookupRelease(k8s)
	if err != nil {
		return err
	}
	b := &builder{out: out, work: work, logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }}
	for _, c := range components(r) {
		if err := b.build(ctx, c); err != nil {
			return err
		}
	}
	if err := b.buildPause(ctx, r); err != nil {
		return err
	}
	if err := b.buildProbe(ctx); err != nil {
		return err
	}
	if err := b.buildStatic(ctx, "github.com/k8slab/k8slab/cmd/k8slab-iptables-wrapper", "work/k8slab-iptables-wrapper"); err != nil {
		return err
	}
	specs, err := b.imageSpecs(r)
	if err != nil {
		return err
	}
	images := map[string]string{}
	for _, s := range specs {
		if err := b.buildImage(ctx, s); err != nil {
			return err
		}
		images[s.ref] = "images/" + provision.ImageFileName(s.ref)
	}
	var notes []string
	for _, v := range r.Calico {
		if err := copyDir(filepath.Join(calicoDir, v), filepath.Join(out, "calico", v)); err != nil {
			return fmt.Errorf("calico %s: %w", v, err)
		}
		got, err := b.calicoImages(filepath.Join(calicoDir, v, "images"), v)
		if err != nil {
			return fmt.Errorf("calico %s images: %w", v, err)
		}
		if len(got) == 0 {
			notes = append(notes, "Calico "+v+"'s images are not included (no images/ beside its manifests): containerd on the nodes pulls them.")
		}
		for ref, rel := range got {
			images[ref] = rel
		}
	}
	return provision.WriteBundleManifest(out, provision.Bundle{Release: r, Images: images, Notes: notes})
}

// calicoImages copies a Calico version's image archives (calico-node-v3.32.1.tar
// and so on, as `docker save` writes them) into images/, after checking
// each against the folder's SHA256SUMS. A folder without archives adds none.
func (b *builder) calicoImages(dir, version string) (map[string]string, error) {
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if os.IsNotExist(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	want := map[string]string{}
	for _, line := range strings.Split(string(sums), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			want[strings.TrimPrefix(f[1], "*")] = f[0]
		}
	}
	out := map[string]string{}
	for _, ref := range provision.CalicoImages(version) {
		name := ref[strings.LastIndex(ref, "/")+1 : strings.LastIndex(ref, ":")]
		src := filepath.Join(dir, "calico-"+name+"-"+version+".tar")
		sum, _, err := provision.FileSHA256(src)
		if err != nil {
			return nil, err
		}
		if want[filepath.Base(src)] != sum {
			return nil, fmt.Errorf("%s: sha256 %s, SHA256SUMS says %q", src, sum, want[filepath.Base(src)])
		}
		rel := "images/" + provision.ImageFileName(ref)
		if err := copyFile(src, filepath.Join(b.out, rel)); err != nil {
			return nil, err
		}
		out[ref] = rel
	}
	b.logf("calico %s: %d images", version, len(out))
	return out, nil
}

// copyFile copies through a temporary file, so a stopped build leaves no
// half-written archive under its final name.
func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	return fsatomic.WriteFile(to, in, 0o644)
}

// buildPause compiles the pause container's C program from the Kubernetes
// module, statically, as the upstream image does.
func (b *builder) buildPause(ctx context.Context, r provision.Release) error {
	dst := b.path("work/pause")
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	o, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", "k8s.io/kubernetes@"+r.Kubernetes).Output()
	if err != nil {
		return fmt.Errorf("pause: %w", err)
	}
	var info struct{ Dir string }
	if err := json.Unmarshal(o, &info); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	src := filepath.Join(info.Dir, "build", "pause", "linux", "pause.c")
	cmd := exec.CommandContext(ctx, "gcc", "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v"+r.Pause, "-o", dst, src)
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pause: gcc: %v: %s", err, o)
	}
	b.logf("pause %s: built", r.Pause)
	return nil
}

// buildProbe compiles verify's test binary from this module, statically:
// its image holds nothing else.
func (b *builder) buildProbe(ctx context.Context) error {
	return b.buildStatic(ctx, "github.com/k8slab/k8slab/cmd/k8slab-probe", "work/k8slab-probe")
}

// buildStatic compiles one of this module's commands without cgo, for an
// image that has no C library for it.
func (b *builder) buildStatic(ctx context.Context, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", b.path(out), pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", filepath.Base(pkg), err, o)
	}
	return nil
}

func copyDir(from, to string) error {
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
