package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
)

// standInBundle is a bundle of small stand-in files in the release's
// layout: binaries, CNI plugins and an image archive per image (kubeadm's,
// verify's probe and Calico's).
func standInBundle(t *testing.T) (*provision.Bundle, string) {
	t.Helper()
	release, err := provision.LookupRelease(provision.DefaultKubernetesVersion)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := &provision.Bundle{Release: release, Images: map[string]string{}}
	add := func(rel string) {
		content := []byte("stand-in " + rel)
		os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, rel), content, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(content)
		b.Files = append(b.Files, provision.File{Path: rel, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(content))})
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "crictl", "runc", "kubeadm", "kubelet", "kubectl", "etcd", "etcdctl"} {
		add("bin/" + bin)
	}
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		add("cni/" + p)
	}
	refs := append(provision.ImagesFor(release, true, true), provision.ProbeImage)
	for i, ref := range append(refs, provision.CalicoImages(cluster.DefaultCalicoVersion)...) {
		rel := fmt.Sprintf("images/%d.tar", i)
		add(rel)
		b.Images[ref] = rel
	}
	return b, dir
}

// provisionPhase provisions kube-node1 (control plane, stacked etcd) and
// kube-node2 (worker) on fake hosts from bundle b in dir.
func provisionPhase(t *testing.T, b *provision.Bundle, dir string, cp, worker *hosttest.Fake) *Provision {
	t.Helper()
	cfg := &cluster.Config{Nodes: []string{"kube-node1", "kube-node2"}}
	cfg.Default()
	r, err := run.New(run.Options{Command: "install"}, []host.Host{cp, worker})
	if err != nil {
		t.Fatal(err)
	}
	c := &Context{Cluster: cfg, Release: b.Release, Bundle: b, BundleDir: dir, Runner: r,
		Hosts: map[string]host.Host{"kube-node1": cp, "kube-node2": worker}}
	c.setFacts("kube-node1", provision.Facts{Hostname: "kube-node1"}, "172.31.3.11")
	c.setFacts("kube-node2", provision.Facts{Hostname: "kube-node2"}, "172.31.3.12")
	return &Provision{Context: c}
}

// A fresh node gets every file, containerd started, and exactly the
// images its roles run: the control plane's images stay off a worker.
func TestProvisionFreshNodes_SimulatedNodes(t *testing.T) {
	cp, worker := &hosttest.Fake{Label: "kube-node1"}, &hosttest.Fake{Label: "kube-node2"}
	b, dir := standInBundle(t)
	p := provisionPhase(t, b, dir, cp, worker)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*hosttest.Fake{cp, worker} {
		for _, want := range []string{"upload: /usr/local/bin/containerd", "upload: /usr/local/bin/kubelet", "upload: /etc/containerd/config.toml",
			"systemctl restart containerd", "systemctl enable -q kubelet"} {
			if !h.Did(want) {
				t.Errorf("%s: no %q in %q", h.Label, want, h.Steps())
			}
		}
	}
	imports := func(h *hosttest.Fake) (n int) {
		for _, e := range h.Log() {
			if strings.Contains(e, "ctr -n k8s.io images import") {
				n++
			}
		}
		return n
	}
	if got, want := imports(worker), imports(cp)-len(provision.ImagesFor(p.Release, true, true))+len(provision.ImagesFor(p.Release, false, false)); got != want || got >= imports(cp) {
		t.Errorf("worker: %d images imported, control plane %d: want %d (kubeadm's control-plane images stay off it)", got, imports(cp), want)
	}
	// plan says what install does: the images it lists for a node are
	// the archives imported there.
	planned := map[string][]string{}
	for _, s := range p.Plan() {
		if list, ok := strings.CutPrefix(s.Action, "import images: "); ok {
			for _, ref := range strings.Split(list, ", ") {
				planned[s.Node] = append(planned[s.Node], path.Base(b.Images[ref]))
			}
		}
	}
	for _, h := range []*hosttest.Fake{cp, worker} {
		var imported []string
		for _, e := range h.Log() {
			if _, rest, ok := strings.Cut(e, "ctr -n k8s.io images import "); ok {
				imported = append(imported, path.Base(strings.Trim(strings.Fields(rest)[0], "'")))
			}
		}
		slices.Sort(imported)
		slices.Sort(planned[h.Label])
		if !slices.Equal(imported, planned[h.Label]) || len(imported) == 0 {
			t.Errorf("%s: plan lists the images %v, install imported %v", h.Label, planned[h.Label], imported)
		}
	}
}

// A converged node costs one round trip: the check, then nothing
// uploaded, restarted or imported.
func TestProvisionConvergedNodeIsOneCheck_SimulatedNodes(t *testing.T) {
	b, dir := standInBundle(t)
	// Neither node is an external etcd member (etcd is stacked on the
	// control plane), so neither has etcd's binaries.
	converged := func(images []string) *hosttest.Fake {
		ctr, err := provision.ContainerdFiles(b, dir, false)
		if err != nil {
			t.Fatal(err)
		}
		k8s, err := provision.KubernetesFiles(b, dir, false)
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		for _, f := range append(ctr, k8s...) {
			fmt.Fprintf(&out, "file=%s %o recorded %s\n", f.SHA256, f.Mode.Perm(), f.Remote)
		}
		out.WriteString("containerd=active\n")
		for _, ref := range images {
			fmt.Fprintf(&out, "image=%s\n", ref)
		}
		return &hosttest.Fake{Rules: []hosttest.Rule{{Match: "echo containerd=active", Stdout: out.String()}}}
	}
	calico := provision.Roles{Calico: cluster.DefaultCalicoVersion}
	cp := converged(provision.NodeImages(b, provision.Roles{ControlPlane: true, StackedEtcd: true, Calico: calico.Calico}))
	worker := converged(provision.NodeImages(b, calico))
	cp.Label, worker.Label = "kube-node1", "kube-node2"
	p := provisionPhase(t, b, dir, cp, worker)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*hosttest.Fake{cp, worker} {
		if log := h.Log(); len(log) != 1 {
			t.Errorf("%s: a converged node got %d steps, want the check alone: %q", h.Label, len(log), h.Steps())
		}
	}
}
