package provision

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/k8slab/k8slab/internal/fsatomic"
)

// Source is one upstream release artifact: where it is published, where
// its checksum is published (or the pinned sum when upstream publishes
// none), and which of its files go where in the bundle layout.
type Source struct {
	URL string
	// SumURL is the published checksum file: a bare sum, or "sum  name"
	// lines (sha256sum format). Empty when SHA256 is pinned in code.
	SumURL string
	SHA256 string
	// Files maps a member of the archive (its base name) to a bundle path;
	// a plain file has one entry keyed by its own base name.
	Files map[string]string
}

// goArch is the release naming of a machine architecture (uname -m).
func goArch(machine string) (string, error) {
	switch machine {
	case "x86_64", "amd64":
		return "amd64", nil
	case "aarch64", "arm64":
		return "arm64", nil
	}
	return "", fmt.Errorf("no release binaries for architecture %s", machine)
}

// calicoManifestSHA256 pins the release manifests k8slab was tested with
// (Calico publishes no checksum for them).
func calicoManifestSHA256() map[string]string {
	return map[string]string{"v3.32.1": "a1df919d9721cf667accdc3e72848911b0cb25cfab7d2478ad0c996302c95744"}
}

// Sources lists what a node install needs from upstream for a release:
// the node binaries (control-plane components come as images, pulled by
// containerd) and the Calico manifest.
func (r Release) Sources(machine, calicoVersion string) ([]Source, error) {
	arch, err := goArch(machine)
	if err != nil {
		return nil, err
	}
	var out []Source
	for _, b := range []string{"kubeadm", "kubelet", "kubectl"} {
		u := fmt.Sprintf("https://dl.k8s.io/release/%s/bin/linux/%s/%s", r.Kubernetes, arch, b)
		out = append(out, Source{URL: u, SumURL: u + ".sha256", Files: map[string]string{b: "bin/" + b}})
	}
	gh := "https://github.com/"
	ctrd := fmt.Sprintf("%scontainerd/containerd/releases/download/%s/containerd-%s-linux-%s.tar.gz", gh, r.Containerd, strings.TrimPrefix(r.Containerd, "v"), arch)
	etcd := fmt.Sprintf("%setcd-io/etcd/releases/download/%[2]s/etcd-%[2]s-linux-%[3]s.tar.gz", gh, r.Etcd, arch)
	cni := fmt.Sprintf("%scontainernetworking/plugins/releases/download/%[2]s/cni-plugins-linux-%[3]s-%[2]s.tgz", gh, r.CNIPlugins, arch)
	crictl := fmt.Sprintf("%skubernetes-sigs/cri-tools/releases/download/%[2]s/crictl-%[2]s-linux-%[3]s.tar.gz", gh, r.Crictl, arch)
	runc := fmt.Sprintf("%sopencontainers/runc/releases/download/%s/runc.%s", gh, r.Runc, arch)
	cniFiles := map[string]string{}
	for _, c := range cniPlugins() {
		cniFiles[c] = "cni/" + c
	}
	out = append(out,
		Source{URL: ctrd, SumURL: ctrd + ".sha256sum", Files: map[string]string{
			"containerd": "bin/containerd", "containerd-shim-runc-v2": "bin/containerd-shim-runc-v2", "ctr": "bin/ctr"}},
		Source{URL: runc, SumURL: urlDir(runc) + "/runc.sha256sum", Files: map[string]string{"runc." + arch: "bin/runc"}},
		Source{URL: cni, SumURL: cni + ".sha256", Files: cniFiles},
		Source{URL: crictl, SumURL: crictl + ".sha256", Files: map[string]string{"crictl": "bin/crictl"}},
		Source{URL: etcd, SumURL: urlDir(etcd) + "/SHA256SUMS", Files: map[string]string{"etcd": "bin/etcd", "etcdctl": "bin/etcdctl"}},
	)
	sum, ok := calicoManifestSHA256()[calicoVersion]
	if !ok {
		return nil, fmt.Errorf("calico %s: no pinned checksum for its manifest", calicoVersion)
	}
	out = append(out, Source{
		URL:    "https://raw.githubusercontent.com/projectcalico/calico/" + calicoVersion + "/manifests/calico.yaml",
		SHA256: sum, Files: map[string]string{"calico.yaml": "calico/" + calicoVersion + "/calico.yaml"},
	})
	return out, nil
}

// urlDir is a URL without its last element (path.Dir would fold "//").
func urlDir(u string) string { return u[:strings.LastIndex(u, "/")] }

// Downloader fetches release artifacts into a local cache once, verifies
// each against its published sha256, and lays them out as a bundle, so
// every step after "the file is here" is the same as with --artifacts.
type Downloader struct {
	Client *http.Client
	// Cache is the root (~/.cache/k8slab); artifacts go under
	// downloads/<kubernetes version>-<arch>.
	Cache string
	// Mirrors rewrite URL prefixes ("https://dl.k8s.io" → an internal
	// mirror), for networks that reach upstream only through one.
	Mirrors map[string]string
	// Progress is told about each download.
	Progress func(string)
}

func (d *Downloader) url(u string) string {
	for from, to := range d.Mirrors {
		if strings.HasPrefix(u, from) {
			return strings.TrimSuffix(to, "/") + strings.TrimPrefix(u, from)
		}
	}
	return u
}

// Fetch returns a bundle for the release (images are then pulled by
// containerd on the nodes). Files already in the cache with the right
// checksum are not downloaded again.
func (d *Downloader) Fetch(ctx context.Context, r Release, machine, calicoVersion string) (*Bundle, string, error) {
	sources, err := r.Sources(machine, calicoVersion)
	if err != nil {
		return nil, "", err
	}
	arch, _ := goArch(machine)
	dir := filepath.Join(d.Cache, "downloads", r.Kubernetes+"-"+arch)
	if b, err := LoadBundle(dir); err == nil && b.Release.Kubernetes == r.Kubernetes && slices.Contains(b.Release.Calico, calicoVersion) {
		return b, dir, nil
	}
	for _, s := range sources {
		if err := d.fetch(ctx, s, dir); err != nil {
			return nil, "", err
		}
	}
	rel := r
	rel.Calico = []string{calicoVersion}
	b := Bundle{Release: rel, Pull: true, Notes: []string{"downloaded from the release hosts; images are pulled by containerd on the nodes"}}
	if err := WriteBundleManifest(dir, b); err != nil {
		return nil, "", err
	}
	bundle, err := LoadBundle(dir)
	return bundle, dir, err
}

func (d *Downloader) fetch(ctx context.Context, s Source, dir string) error {
	want := s.SHA256
	if want == "" {
		var body strings.Builder
		if err := d.get(ctx, s.SumURL, &body, 1<<20); err != nil {
			return err
		}
		if want = publishedSum(body.String(), path.Base(s.URL)); want == "" {
			return fmt.Errorf("%s: no checksum for %s in it", d.url(s.SumURL), path.Base(s.URL))
		}
	}
	if err := os.MkdirAll(d.Cache, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(d.Cache, "download-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	if d.Progress != nil {
		d.Progress("downloading " + d.url(s.URL))
	}
	if err := d.get(ctx, s.URL, io.MultiWriter(tmp, h), 1<<31); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: sha256 %s, published %s (download damaged or tampered with; nothing was installed)", d.url(s.URL), got, want)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if strings.HasSuffix(s.URL, ".tar.gz") || strings.HasSuffix(s.URL, ".tgz") {
		return extract(tmp, s.Files, dir, d.url(s.URL))
	}
	for _, rel := range s.Files {
		if err := fsatomic.WriteFile(filepath.Join(dir, filepath.FromSlash(rel)), tmp, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// get copies the body of u to w, at most limit bytes.
func (d *Downloader) get(ctx context.Context, u string, w io.Writer, limit int64) error {
	u = d.url(u)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	c := d.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download %s: %s", u, resp.Status)
	}
	if _, err := io.Copy(w, io.LimitReader(resp.Body, limit)); err != nil {
		return fmt.Errorf("download %s: %w", u, err)
	}
	return nil
}

// publishedSum finds name's sum in a checksum file: a bare sum (one
// artifact per file, as dl.k8s.io does) or sha256sum lines.
func publishedSum(body, name string) string {
	lines := strings.Split(strings.TrimSpace(body), "\n")
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 1 && len(lines) == 1 && len(f[0]) == 64 {
			return f[0]
		}
		if len(f) == 2 && strings.TrimPrefix(path.Base(f[1]), "*") == name {
			return f[0]
		}
	}
	return ""
}

// extract writes the wanted members of a tar.gz (by base name) and fails
// when one is missing: a release that renamed a file must not install a
// half set.
func extract(r io.Reader, want map[string]string, dir, from string) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	tr := tar.NewReader(gz)
	found := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", from, err)
		}
		rel, ok := want[path.Base(hdr.Name)]
		if !ok || hdr.Typeflag != tar.TypeReg || found[rel] {
			continue
		}
		if err := fsatomic.WriteFile(filepath.Join(dir, filepath.FromSlash(rel)), tr, 0o755); err != nil {
			return err
		}
		found[rel] = true
	}
	for member, rel := range want {
		if !found[rel] {
			return fmt.Errorf("%s has no %s", from, member)
		}
	}
	return nil
}
