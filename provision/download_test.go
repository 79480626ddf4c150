package provision

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// simulatedReleaseHost serves, on loopback, artifacts laid out and
// checksummed the way dl.k8s.io, GitHub releases and raw.githubusercontent
// publish them. The binaries are stand-ins (short text); the Calico
// manifest is the real upstream file, so its pinned checksum is checked
// against the real thing. This proves the download, verification and
// layout logic, not that upstream URLs are right today (no internet here).
type simulatedReleaseHost struct {
	files    map[string][]byte // URL path -> body
	requests atomic.Int32
	srv      *httptest.Server
}

func tgz(t *testing.T, members map[string]string) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range members {
		must(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}))
		_, err := tw.Write([]byte(body))
		must(t, err)
	}
	must(t, tw.Close())
	must(t, gz.Close())
	return buf.Bytes()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newReleaseHost(t *testing.T, r Release, tamper func(files map[string][]byte)) *simulatedReleaseHost {
	calico, err := os.ReadFile("../testdata/calico/v3.32.1/calico.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := &simulatedReleaseHost{files: map[string][]byte{}}
	add := func(u string, body []byte) { h.files[strings.SplitN(u, "/", 4)[3]] = body }
	sources, err := r.Sources("x86_64", "v3.32.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sources {
		var body []byte
		switch {
		case strings.HasSuffix(s.URL, "calico.yaml"):
			body = calico
		case strings.HasSuffix(s.URL, "gz"):
			members := map[string]string{}
			for m := range s.Files {
				// Upstream archives nest members in folders (bin/, etcd-v3.7.0-linux-amd64/).
				members["release/"+m] = "stand-in " + m
			}
			body = tgz(t, members)
		default:
			body = []byte("stand-in " + path.Base(s.URL))
		}
		add(s.URL, body)
		if s.SumURL != "" {
			line := sum(body) + "  " + path.Base(s.URL) + "\n"
			if strings.HasSuffix(s.SumURL, ".sha256") && strings.Contains(s.URL, "dl.k8s.io") {
				line = sum(body) // dl.k8s.io publishes the bare sum
			}
			key := strings.SplitN(s.SumURL, "/", 4)[3]
			h.files[key] = append(h.files[key], line...)
		}
	}
	if tamper != nil {
		tamper(h.files)
	}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h.requests.Add(1)
		// /<host>/<path>: the mirror flag maps each upstream host here.
		parts := strings.SplitN(strings.TrimPrefix(req.URL.Path, "/"), "/", 2)
		body, ok := h.files[parts[len(parts)-1]]
		if !ok {
			http.NotFound(w, req)
			return
		}
		w.Write(body)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *simulatedReleaseHost) mirrors() map[string]string {
	m := map[string]string{}
	for _, host := range []string{"dl.k8s.io", "github.com", "raw.githubusercontent.com"} {
		m["https://"+host] = h.srv.URL + "/" + host
	}
	return m
}

func TestDownloadFromSimulatedReleaseHost(t *testing.T) {
	r, _ := LookupRelease(DefaultKubernetesVersion)
	ctx := context.Background()
	kubeletPath := fmt.Sprintf("release/%s/bin/linux/amd64/kubelet", r.Kubernetes)

	cases := []struct {
		name    string
		tamper  func(map[string][]byte)
		wantErr string
	}{
		{"published checksums match: a bundle the installer accepts", nil, ""},
		{"tampered kubelet refused", func(f map[string][]byte) { f[kubeletPath] = []byte("evil") }, "kubelet: sha256"},
		{"archive without a member refused", func(f map[string][]byte) {
			for k := range f {
				if strings.HasSuffix(k, "containerd-2.4.2-linux-amd64.tar.gz") {
					f[k] = tgz(t, map[string]string{"bin/containerd": "x", "bin/containerd-shim-runc-v2": "x"})
					f[k+".sha256sum"] = []byte(sum(f[k]) + "  containerd-2.4.2-linux-amd64.tar.gz\n")
				}
			}
		}, "has no ctr"},
		{"missing checksum file refused", func(f map[string][]byte) { delete(f, kubeletPath+".sha256") }, "404"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newReleaseHost(t, r, c.tamper)
			d := &Downloader{Cache: t.TempDir(), Mirrors: h.mirrors()}
			b, dir, err := d.Fetch(ctx, r, "x86_64", "v3.32.1")
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				if _, err := os.Stat(filepath.Join(dir, BundleManifestName)); err == nil {
					t.Errorf("a failed download left a bundle manifest")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !b.Pull || len(b.Images) != 0 {
				t.Errorf("downloaded bundle: Pull %v, images %v", b.Pull, b.Images)
			}
			for rel, want := range map[string]string{"bin/ctr": "stand-in ctr", "bin/runc": "stand-in runc.amd64", "cni/portmap": "stand-in portmap", "bin/etcdctl": "stand-in etcdctl"} {
				got, err := os.ReadFile(filepath.Join(dir, rel))
				if err != nil || string(got) != want {
					t.Errorf("%s = %q, %v", rel, got, err)
				}
			}
			// The same files a node gets from an offline bundle.
			if _, err := ContainerdFiles(b, dir, false); err != nil {
				t.Error(err)
			}
			if _, err := KubernetesFiles(b, dir, true); err != nil {
				t.Error(err)
			}
			n := h.requests.Load()
			if _, _, err := d.Fetch(ctx, r, "x86_64", "v3.32.1"); err != nil || h.requests.Load() != n {
				t.Errorf("second fetch: %v, %d new requests (want the cache)", err, h.requests.Load()-n)
			}
		})
	}
}
