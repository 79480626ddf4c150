package main

import (
	"archive/tar"
	"context"
	"io"
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
	tr := tar.NewReader(rc)
	var files []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
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
