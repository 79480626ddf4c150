package provision

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// BundleVersion identifies the offline bundle layout.
const BundleVersion = "k8slab.dev/bundle/v1"

// BundleManifestName is the manifest file at the top of a bundle.
const BundleManifestName = "bundle.json"

// Bundle is an offline artifact set (`install --artifacts DIR`):
//
//	bundle.json            this manifest
//	bin/                   kubeadm kubelet kubectl kube-* etcd etcdctl containerd* ctr runc crictl
//	cni/                   bridge host-local loopback portmap
//	images/<name>.tar      docker-archive tarballs, imported with ctr -n k8s.io images import
//	calico/<version>/      the release manifests (calico.yaml, ...)
type Bundle struct {
	Version string  `json:"version"`
	Release Release `json:"release"`
	Files   []File  `json:"files"`
	// Images maps image references to their tarball under images/.
	Images map[string]string `json:"images"`
	// Pull: the bundle has no images (downloaded from release hosts);
	// containerd on the nodes pulls them.
	Pull bool `json:"pull,omitempty"`
	// Notes say honestly what the bundle lacks and why.
	Notes []string `json:"notes,omitempty"`
}

// File is one bundle file with its checksum.
type File struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// FileSHA256 hashes a file.
func FileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// WriteBundleManifest hashes every file under dir (but the manifest) into
// b.Files and writes bundle.json.
func WriteBundleManifest(dir string, b Bundle) error {
	b.Version = BundleVersion
	b.Files = nil
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == BundleManifestName || strings.HasSuffix(rel, ".tmp") {
			return nil
		}
		sum, size, err := FileSHA256(p)
		if err != nil {
			return err
		}
		b.Files = append(b.Files, File{Path: filepath.ToSlash(rel), SHA256: sum, Size: size})
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(b.Files, func(i, j int) bool { return b.Files[i].Path < b.Files[j].Path })
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, BundleManifestName), append(data, '\n'), 0o644)
}

// LoadBundle reads and checks a bundle: the manifest must parse, every
// listed file must exist with its checksum, and every file the release
// needs must be listed. All problems are reported together.
func LoadBundle(dir string) (*Bundle, error) { return LoadBundleCached(dir, "") }

// LoadBundleCached is LoadBundle with the files' checksums remembered in
// sumsFile (none when empty) by path, size and modification time, as make
// and rsync judge files: hashing a ~1 GB bundle on every run took 4.5 s on
// a busy workstation, all of it before a concurrent run could be refused
// by the lock. A file changed in place gets a new modification time and
// is hashed again.
func LoadBundleCached(dir, sumsFile string) (*Bundle, error) {
	sums := loadSums(sumsFile)
	defer sums.save()
	data, err := os.ReadFile(filepath.Join(dir, BundleManifestName))
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("--artifacts %s: no %s: not an offline bundle (make bundle builds one into ~/.cache/k8slab/bundle/<version>; or leave --artifacts out to download the release)", dir, BundleManifestName)
	}
	if err != nil {
		return nil, fmt.Errorf("--artifacts %s: %w", dir, err)
	}
	var b Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("--artifacts %s: %s: %w", dir, BundleManifestName, err)
	}
	if b.Version != BundleVersion {
		return nil, fmt.Errorf("--artifacts %s: bundle version %q, want %q", dir, b.Version, BundleVersion)
	}
	listed := map[string]bool{}
	var problems []string
	for _, f := range b.Files {
		listed[f.Path] = true
		sum, err := sums.sha256(filepath.Join(dir, filepath.FromSlash(f.Path)))
		switch {
		case os.IsNotExist(err):
			problems = append(problems, f.Path+": missing")
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", f.Path, err))
		case sum != f.SHA256:
			problems = append(problems, fmt.Sprintf("%s: sha256 %s, manifest says %s", f.Path, sum, f.SHA256))
		}
	}
	for _, p := range b.Release.RequiredFiles(b.Pull) {
		if !listed[p] {
			problems = append(problems, p+": not in the bundle")
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, fmt.Errorf("--artifacts %s is incomplete or damaged:\n  %s", dir, strings.Join(problems, "\n  "))
	}
	return &b, nil
}

// bundleBinaries are the executables a bundle carries under bin/.
func bundleBinaries() []string {
	return []string{
		"kubeadm", "kubelet", "kubectl", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy",
		"etcd", "etcdctl", "containerd", "containerd-shim-runc-v2", "ctr", "runc", "crictl",
	}
}

// cniPlugins are the reference plugins a bundle carries under cni/.
func cniPlugins() []string { return []string{"bridge", "host-local", "loopback", "portmap"} }

// RequiredFiles lists every path a complete bundle of this release holds;
// one whose images are pulled holds only what runs on the nodes' hosts.
func (r Release) RequiredFiles(pull bool) []string {
	var out []string
	for _, b := range bundleBinaries() {
		if pull && strings.HasPrefix(b, "kube-") {
			continue // control-plane components run from images
		}
		out = append(out, "bin/"+b)
	}
	for _, c := range cniPlugins() {
		out = append(out, "cni/"+c)
	}
	for _, img := range r.Images() {
		if !pull {
			out = append(out, "images/"+ImageFileName(img))
		}
	}
	for _, c := range r.Calico {
		out = append(out, "calico/"+c+"/calico.yaml")
	}
	return out
}

// ImageFileName is where an image's tarball lives under images/.
func ImageFileName(ref string) string {
	name := ref[strings.LastIndex(ref, "/")+1:]
	return strings.ReplaceAll(name, ":", "_") + ".tar"
}

// sumCache is LoadBundleCached's record of checksums, keyed by absolute
// path.
type sumCache struct {
	file    string
	entries map[string]cachedSum
	dirty   bool
}

type cachedSum struct {
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
	SHA256  string `json:"sha256"`
}

// loadSums reads the cache; a missing or unreadable one starts empty (it
// is only ever a shortcut).
func loadSums(file string) *sumCache {
	c := &sumCache{file: file, entries: map[string]cachedSum{}}
	if file != "" {
		if b, err := os.ReadFile(file); err == nil {
			json.Unmarshal(b, &c.entries)
		}
	}
	return c
}

func (c *sumCache) sha256(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	abs, _ := filepath.Abs(path)
	if e, ok := c.entries[abs]; ok && e.Size == fi.Size() && e.ModTime == fi.ModTime().UnixNano() {
		return e.SHA256, nil
	}
	sum, _, err := FileSHA256(path)
	if err != nil {
		return "", err
	}
	if c.file != "" {
		c.entries[abs] = cachedSum{Size: fi.Size(), ModTime: fi.ModTime().UnixNano(), SHA256: sum}
		c.dirty = true
	}
	return sum, nil
}

// save writes the cache when it learnt something, without the files that
// are gone (bundles of tests, old versions); failing to is not an error
// (the next run hashes again). Concurrent runs each write a whole file.
func (c *sumCache) save() {
	if c.file == "" || !c.dirty {
		return
	}
	for p := range c.entries {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			delete(c.entries, p)
		}
	}
	b, err := json.Marshal(c.entries)
	if err != nil || os.MkdirAll(filepath.Dir(c.file), 0o755) != nil {
		return
	}
	f, err := os.CreateTemp(filepath.Dir(c.file), filepath.Base(c.file)+".*.tmp")
	if err != nil {
		return
	}
	_, werr := f.Write(b)
	if cerr := f.Close(); werr != nil || cerr != nil {
		os.Remove(f.Name())
		return
	}
	if os.Rename(f.Name(), c.file) != nil {
		os.Remove(f.Name())
	}
}
