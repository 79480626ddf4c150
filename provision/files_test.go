package provision

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/host/hosttest"
)

// TestSyncFiles runs the real check script with this machine's shell:
// what is uploaded, and how many round trips each case costs (a converged
// node must cost exactly one).
func TestSyncFiles(t *testing.T) {
	t.Setenv("K8SLAB_STATE_DIR", t.TempDir())
	dir := t.TempDir()
	a, b := filepath.Join(dir, "bin", "a"), filepath.Join(dir, "etc", "b.conf")
	specs := func(bContent string) []FileSpec {
		return []FileSpec{Generated(a, 0o755, "binary a\n"), Generated(b, 0o644, bContent)}
	}
	p := filepath.Join(dir, "cni", "host-local")
	ifMissing := func(content string) []FileSpec {
		f := Generated(p, 0o755, content)
		f.IfMissing = true
		return append(specs("b=2\n"), f)
	}
	ctx := context.Background()
	h := &hosttest.Local{}
	cases := []struct {
		name     string
		before   func(t *testing.T)
		files    []FileSpec
		uploads  []string
		commands int
	}{
		{"fresh node: everything uploaded and recorded", nil, specs("b=1\n"), []string{a, b}, 2},
		{"converged: one round trip, nothing written", nil, specs("b=1\n"), nil, 1},
		{"wanted content changed", nil, specs("b=2\n"), []string{b}, 2},
		{"mode changed on the node", func(t *testing.T) { must(t, os.Chmod(a, 0o644)) }, specs("b=2\n"), []string{a}, 2},
		{"edited in place, same size", func(t *testing.T) {
			must(t, os.WriteFile(b, []byte("b=3\n"), 0o644))
			must(t, os.Chtimes(b, time.Now(), time.Now().Add(time.Hour)))
		}, specs("b=2\n"), []string{b}, 2},
		{"record lost, content right: re-recorded, not uploaded", func(t *testing.T) {
			must(t, os.Remove(filepath.Join(os.Getenv("K8SLAB_STATE_DIR"), "files.state")))
		}, specs("b=2\n"), nil, 2},
		{"record back: converged again", nil, specs("b=2\n"), nil, 1},
		// A CNI plugin another installer replaced (Calico's install-cni).
		{"if missing: absent, installed", nil, ifMissing("plugin v1\n"), []string{p}, 2},
		{"if missing: replaced by another version, left alone", func(t *testing.T) {
			must(t, os.WriteFile(p, []byte("calico's own plugin build\n"), 0o755))
		}, ifMissing("plugin v1\n"), nil, 2},
		{"if missing: left alone again, converged", nil, ifMissing("plugin v1\n"), nil, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.before != nil {
				c.before(t)
			}
			h.Reset()
			changed, err := SyncFiles(ctx, h, c.files)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(changed, c.uploads) || !slices.Equal(h.Uploads, c.uploads) {
				t.Errorf("changed %v, uploaded %v, want %v", changed, h.Uploads, c.uploads)
			}
			if len(h.Commands) != c.commands {
				t.Errorf("%d round trips, want %d", len(h.Commands), c.commands)
			}
		})
	}
	if st, err := os.Stat(a); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("a: %v %v", st, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
