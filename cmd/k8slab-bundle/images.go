package main

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/k8slab/k8slab/provision"
)

// imageFile is one file put into an image layer; with link set, a
// symbolic link to link instead.
type imageFile struct {
	src, dst string
	mode     int64
	link     string
}

// imageSpec is one image: its files and config.
type imageSpec struct {
	ref   string
	files []imageFile
	cfg   v1.Config
	// rebuild: k8slab's own image, whose binary this build has just made;
	// the others come from pinned releases and stay cached.
	rebuild bool
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// imageSpecs describes every image kubeadm pulls for r, built from the
// bundle's own binaries: static Go binaries need nothing else, except
// kube-proxy's nftables mode, which calls nft and conntrack.
func (b *builder) imageSpecs(r provision.Release) ([]imageSpec, error) {
	bin := func(n string) imageFile {
		return imageFile{src: filepath.Join(b.out, "bin", n), dst: "/usr/local/bin/" + n, mode: 0o755}
	}
	env := []string{defaultPath}
	var specs []imageSpec
	for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		specs = append(specs, imageSpec{ref: "registry.k8s.io/" + c + ":" + r.Kubernetes, files: []imageFile{bin(c)}, cfg: v1.Config{Env: env}})
	}
	proxyFiles, err := b.kubeProxyFiles(bin("kube-proxy"))
	if err != nil {
		return nil, err
	}
	specs = append(specs,
		// Rebuilt each time: its wrapper is this module's own build.
		imageSpec{ref: "registry.k8s.io/kube-proxy:" + r.Kubernetes, files: proxyFiles, cfg: v1.Config{Env: env}, rebuild: true},
		imageSpec{ref: "registry.k8s.io/etcd:" + r.EtcdImageTag, files: []imageFile{bin("etcd"), bin("etcdctl")}, cfg: v1.Config{Env: env}},
		imageSpec{ref: "registry.k8s.io/coredns/coredns:" + r.CoreDNS,
			files: []imageFile{{src: b.path("work/coredns"), dst: "/coredns", mode: 0o755}},
			cfg:   v1.Config{Env: env, Entrypoint: []string{"/coredns"}}},
		imageSpec{ref: "registry.k8s.io/pause:" + r.Pause,
			files: []imageFile{{src: b.path("work/pause"), dst: "/pause", mode: 0o755}},
			cfg:   v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"}},
		b.probeSpec(),
	)
	return specs, nil
}

// probeSpec is verify's test image: the static probe, run as nobody.
func (b *builder) probeSpec() imageSpec {
	return imageSpec{ref: provision.ProbeImage,
		files:   []imageFile{{src: b.path("work/k8slab-probe"), dst: "/k8slab-probe", mode: 0o755}},
		cfg:     v1.Config{Entrypoint: []string{"/k8slab-probe"}, User: "65534:65534"},
		rebuild: true}
}

// xtablesPlugins is where Debian's iptables keeps the matches and targets
// it loads at run time (ldd cannot see them).
const xtablesPlugins = "/usr/lib/x86_64-linux-gnu/xtables"

// kubeProxyFiles is what upstream's kube-proxy image has besides the
// binary: nft and conntrack for the nftables mode; iptables in both
// variants (legacy and nft) for the iptables mode, behind
// k8slab-iptables-wrapper, which picks the variant the node uses.
func (b *builder) kubeProxyFiles(proxy imageFile) ([]imageFile, error) {
	files := []imageFile{proxy, {src: b.path("work/k8slab-iptables-wrapper"), dst: "/usr/sbin/k8slab-iptables-wrapper", mode: 0o755}}
	plugins, err := filepath.Glob(filepath.Join(xtablesPlugins, "*.so"))
	if err != nil || len(plugins) == 0 {
		return nil, fmt.Errorf("kube-proxy image: no iptables plugins in %s (install iptables on the build machine)", xtablesPlugins)
	}
	// The plugins need libraries of their own (libxt_statistic: libm),
	// which iptables-restore loads with them: ldd each one too.
	host, err := hostBinariesWithLibs(append([]string{"/usr/sbin/nft", "/usr/sbin/conntrack", "/usr/sbin/xtables-legacy-multi", "/usr/sbin/xtables-nft-multi"}, plugins...)...)
	if err != nil {
		return nil, fmt.Errorf("kube-proxy image: %w (install nftables, conntrack and iptables on the build machine)", err)
	}
	files = append(files, host...)
	link := func(name, to string) { files = append(files, imageFile{dst: "/usr/sbin/" + name, link: to}) }
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, suffix := range []string{"", "-save", "-restore"} {
			link(fam+suffix, "k8slab-iptables-wrapper")
			for _, v := range []string{"legacy", "nft"} {
				link(fam+"-"+v+suffix, "xtables-"+v+"-multi")
			}
		}
	}
	return files, nil
}

var lddPath = regexp.MustCompile(`(/[^ ]+\.so[^ ]*) \(0x`)

// hostBinariesWithLibs copies programs from this (Debian) machine with the
// shared libraries ldd reports, at the same paths.
func hostBinariesWithLibs(bins ...string) ([]imageFile, error) {
	seen := map[string]bool{}
	var out []imageFile
	add := func(p string, mode int64) {
		if !seen[p] {
			seen[p] = true
			out = append(out, imageFile{src: p, dst: p, mode: mode})
		}
	}
	for _, b := range bins {
		if _, err := os.Stat(b); err != nil {
			return nil, err
		}
		add(b, 0o755)
		o, err := exec.Command("ldd", b).Output()
		if err != nil {
			return nil, fmt.Errorf("ldd %s: %w", b, err)
		}
		for _, m := range lddPath.FindAllStringSubmatch(string(o), -1) {
			add(m[1], 0o755)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].dst < out[j].dst })
	return out, nil
}

// buildImage writes a docker-archive tarball that `ctr images import` takes.
func (b *builder) buildImage(ctx context.Context, s imageSpec) error {
	dst := filepath.Join(b.out, "images", provision.ImageFileName(s.ref))
	if _, err := os.Stat(dst); err == nil && !s.rebuild {
		b.logf("image %s: cached", s.ref)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	layerPath := filepath.Join(b.work, "layers", provision.ImageFileName(s.ref))
	if err := os.MkdirAll(filepath.Dir(layerPath), 0o755); err != nil {
		return err
	}
	if err := writeLayer(layerPath, s.files); err != nil {
		return fmt.Errorf("image %s: %w", s.ref, err)
	}
	layer, err := tarball.LayerFromFile(layerPath)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", "amd64", s.cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	tag, err := name.NewTag(s.ref)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(dst+".tmp", tag, img); err != nil {
		return err
	}
	b.logf("image %s: written", s.ref)
	os.Remove(layerPath)
	return os.Rename(dst+".tmp", dst)
}

// writeLayer writes a tar with the files and their parent directories,
// owned by root, with fixed times so rebuilds are reproducible.
func writeLayer(path string, files []imageFile) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	dirs := map[string]bool{}
	for _, file := range files {
		var parents []string
		for d := filepath.Dir(file.dst); d != "/" && !dirs[d]; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
			dirs[d] = true
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		if file.link != "" {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(file.dst, "/"), Linkname: file.link, Mode: 0o777}); err != nil {
				return err
			}
			continue
		}
		src, err := os.Open(file.src)
		if err != nil {
			return err
		}
		st, err := src.Stat()
		if err != nil {
			src.Close()
			return err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(file.dst, "/"), Mode: file.mode, Size: st.Size()}
		if err := tw.WriteHeader(hdr); err != nil {
			src.Close()
			return err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}
