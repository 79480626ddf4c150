package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCNIConfReset runs reset's CNI-configuration snippets with this
// machine's shell on a stand-in for /etc/cni/net.d: the files go, the
// directory (which containerd re-creates and watches) may stay, and the
// check names what is left.
func TestCNIConfReset(t *testing.T) {
	tests := []struct {
		name        string
		files       []string
		mkdir       bool
		wantRemoved bool
	}{
		{"Calico's configuration", []string{"10-calico.conflist", "calico-kubeconfig"}, true, true},
		{"a hidden file too", []string{".k8slab-tmp"}, true, true},
		{"empty directory, as containerd re-creates it: nothing to do", nil, true, false},
		{"no directory: nothing to do", nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "net.d")
			if tt.mkdir {
				must(t, os.MkdirAll(dir, 0o755))
			}
			for _, f := range tt.files {
				must(t, os.WriteFile(filepath.Join(dir, f), []byte("{}"), 0o644))
			}
			sh := func(script string) string {
				out, err := exec.Command("sh", "-c", `gone() { echo "removed=$1"; }`+"\n"+strings.ReplaceAll(script, "/etc/cni/net.d", dir)).CombinedOutput()
				if err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				return string(out)
			}
			if len(tt.files) > 0 {
				if left := sh(cniConfCheckScript); strings.Count(left, "left=") != len(tt.files) {
					t.Errorf("check before the reset: %q", left)
				}
			}
			removed := sh(cniConfRemoveScript)
			if got := strings.Contains(removed, "removed=CNI configuration"); got != tt.wantRemoved {
				t.Errorf("removed: %q, want removed %v", removed, tt.wantRemoved)
			}
			if left := sh(cniConfCheckScript); left != "" {
				t.Errorf("left after the reset: %q", left)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
