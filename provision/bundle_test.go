package provision

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReleaseImagesMatchKubeadm(t *testing.T) {
	r, err := LookupRelease("1.37.2")
	if err != nil {
		t.Fatal(err)
	}
	// What `kubeadm config images list --kubernetes-version v1.37.2` printed
	// with the kubeadm the bundle builds.
	want := `registry.k8s.io/kube-apiserver:v1.37.2
registry.k8s.io/kube-controller-manager:v1.37.2
registry.k8s.io/kube-scheduler:v1.37.2
registry.k8s.io/kube-proxy:v1.37.2
registry.k8s.io/coredns/coredns:v1.14.6
registry.k8s.io/pause:3.10.2
registry.k8s.io/etcd:3.7.0-0`
	if got := strings.Join(r.Images(), "\n"); got != want {
		t.Errorf("images:\n%s\nwant:\n%s", got, want)
	}
	if _, err := LookupRelease("v1.99.0"); err == nil || !strings.Contains(err.Error(), "supported: v1.37.2") {
		t.Errorf("unknown version: %v", err)
	}
}

// fakeBundle writes every required file with placeholder content.
func fakeBundle(t *testing.T) (string, Release) {
	t.Helper()
	r, _ := LookupRelease(DefaultKubernetesVersion)
	dir := t.TempDir()
	for _, p := range r.RequiredFiles(false) {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte("content of "+p), 0o644)
	}
	if err := WriteBundleManifest(dir, Bundle{Release: r}); err != nil {
		t.Fatal(err)
	}
	return dir, r
}

func TestLoadBundle(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(dir string)
		wantErr []string
	}{
		{name: "complete", damage: func(string) {}},
		{
			name:    "a binary altered after the manifest was written",
			damage:  func(dir string) { os.WriteFile(filepath.Join(dir, "bin/kubelet"), []byte("evil"), 0o755) },
			wantErr: []string{"bin/kubelet: sha256 "},
		},
		{
			name: "files missing: every one is listed",
			damage: func(dir string) {
				os.Remove(filepath.Join(dir, "bin/runc"))
				os.Remove(filepath.Join(dir, "images/pause_3.10.2.tar"))
			},
			wantErr: []string{"bin/runc: missing", "images/pause_3.10.2.tar: missing"},
		},
		{
			name:    "no manifest",
			damage:  func(dir string) { os.Remove(filepath.Join(dir, BundleManifestName)) },
			wantErr: []string{"no bundle.json: not an offline bundle (make bundle"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := fakeBundle(t)
			tt.damage(dir)
			_, err := LoadBundle(dir)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("damaged bundle accepted")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLoadBundleRequiresEveryReleaseFile(t *testing.T) {
	dir, r := fakeBundle(t)
	os.Remove(filepath.Join(dir, "cni/portmap"))
	// Rewriting the manifest hides the removal from the checksums: the
	// release's list of required files must still catch it.
	WriteBundleManifest(dir, Bundle{Release: r})
	if _, err := LoadBundle(dir); err == nil || !strings.Contains(err.Error(), "cni/portmap: not in the bundle") {
		t.Fatalf("got %v", err)
	}
}

func TestLoadBundleCached(t *testing.T) {
	tests := []struct {
		name string
		// change runs between a first cached load and a second one.
		change  func(t *testing.T, dir, sums string)
		wantErr string
	}{
		{name: "unchanged", change: func(*testing.T, string, string) {}},
		{
			name: "a binary rewritten in place is hashed again",
			change: func(t *testing.T, dir, _ string) {
				p := filepath.Join(dir, "bin/kubelet")
				os.WriteFile(p, []byte("evil"), 0o755)
				later := time.Now().Add(time.Minute)
				os.Chtimes(p, later, later)
			},
			wantErr: "bin/kubelet: sha256 ",
		},
		{
			name: "the cache trusts size and modification time (as make does)",
			change: func(t *testing.T, dir, _ string) {
				p := filepath.Join(dir, "bin/kubelet")
				fi, _ := os.Stat(p)
				b, _ := os.ReadFile(p)
				b[0] ^= 0xff
				os.WriteFile(p, b, 0o755)
				os.Chtimes(p, fi.ModTime(), fi.ModTime())
			},
		},
		{
			name:    "a removed file is still missing",
			change:  func(t *testing.T, dir, _ string) { os.Remove(filepath.Join(dir, "bin/runc")) },
			wantErr: "bin/runc: missing",
		},
		{
			name:   "a damaged cache is ignored",
			change: func(t *testing.T, _, sums string) { os.WriteFile(sums, []byte("{not json"), 0o644) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := fakeBundle(t)
			sums := filepath.Join(t.TempDir(), "cache", "sums.json")
			if _, err := LoadBundleCached(dir, sums); err != nil {
				t.Fatal(err)
			}
			var cached map[string]cachedSum
			if b, err := os.ReadFile(sums); err != nil || json.Unmarshal(b, &cached) != nil || len(cached) < 10 {
				t.Fatalf("cache after the first load: %d entries, %v", len(cached), err)
			}
			tt.change(t, dir, sums)
			_, err := LoadBundleCached(dir, sums)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatal(err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want %q", err, tt.wantErr)
			}
		})
	}
}
