package main

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/k8slab/k8slab/provision"
)

// TestProbeImage builds verify's test image as make bundle does and reads
// it back the way an image importer would: tag, entrypoint, user and the
// static binary in its one layer.
func TestProbeImage(t *testing.T) {
	b := &builder{out: t.TempDir(), work: t.TempDir(), logf: t.Logf}
	ctx := context.Background()
	if err := b.buildProbe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.buildImage(ctx, b.probeSpec()); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(provision.ProbeImage)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(filepath.Join(b.out, "images", provision.ImageFileName(provision.ProbeImage)), &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/k8slab-probe"}) || cf.Config.User != "65534:65534" || cf.Architecture != "amd64" {
		t.Errorf("config: %+v", cf.Config)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var files []string
	for _, h := range tarHeaders(t, rc) {
		if h.Typeflag == tar.TypeReg {
			files = append(files, h.Name)
			if h.Mode&0o111 == 0 || h.Size < 1<<20 {
				t.Errorf("%s: mode %o, %d bytes", h.Name, h.Mode, h.Size)
			}
		}
	}
	if !slices.Equal(files, []string{"k8slab-probe"}) {
		t.Errorf("layer files %q, want only k8slab-probe", files)
	}
}

// TestKubeProxyImageFiles: the kube-proxy image's layer holds both
// iptables variants with their run-time plugins, every iptables name
// behind the wrapper, and nft and conntrack for the nftables mode.
func TestKubeProxyImageFiles(t *testing.T) {
	b := &builder{out: t.TempDir(), work: t.TempDir(), logf: t.Logf}
	if err := b.buildStatic(context.Background(), "github.com/k8slab/k8slab/cmd/k8slab-iptables-wrapper", "work/k8slab-iptables-wrapper"); err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "kube-proxy")
	if err := os.WriteFile(fake, []byte("kube-proxy"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := b.kubeProxyFiles(imageFile{src: fake, dst: "/usr/local/bin/kube-proxy", mode: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(t.TempDir(), "layer.tar")
	if err := writeLayer(layer, files); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(layer)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	regular, links := map[string]bool{}, map[string]string{}
	for _, h := range tarHeaders(t, f) {
		switch h.Typeflag {
		case tar.TypeReg:
			regular["/"+h.Name] = true
		case tar.TypeSymlink:
			links["/"+h.Name] = h.Linkname
		}
	}
	for _, p := range []string{"/usr/local/bin/kube-proxy", "/usr/sbin/k8slab-iptables-wrapper", "/usr/sbin/xtables-legacy-multi", "/usr/sbin/xtables-nft-multi",
		"/usr/sbin/nft", "/usr/sbin/conntrack", xtablesPlugins + "/libxt_comment.so", xtablesPlugins + "/libxt_statistic.so",
		// What the plugins load: kube-proxy's sync failed on "libxt_statistic.so: libm.so.6: cannot open shared object file".
		"/lib/x86_64-linux-gnu/libm.so.6"} {
		if !regular[p] {
			t.Errorf("no %s in the layer", p)
		}
	}
	for name, want := range map[string]string{
		"iptables": "k8slab-iptables-wrapper", "ip6tables-restore": "k8slab-iptables-wrapper",
		"iptables-legacy-save": "xtables-legacy-multi", "ip6tables-nft": "xtables-nft-multi",
	} {
		if got := links["/usr/sbin/"+name]; got != want {
			t.Errorf("/usr/sbin/%s -> %q, want %q", name, got, want)
		}
	}
}

// tarHeaders reads every header of a tar stream.
func tarHeaders(t *testing.T, r io.Reader) []*tar.Header {
	t.Helper()
	var out []*tar.Header
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}
