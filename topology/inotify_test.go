package topology

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInotifyRaisedAndPutBack runs two container labs' raise and restore
// against a folder standing in for /proc/sys: each raises what its nodes
// need, the workstation's own values are kept once, and only the last
// lab down puts them back, exactly.
func TestInotifyRaisedAndPutBack(t *testing.T) {
	procSys = t.TempDir()
	t.Cleanup(func() { procSys = "/proc/sys" })
	set := func(k, v string) {
		p := filepath.Join(procSys, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	get := func(k string) string {
		b, _ := os.ReadFile(filepath.Join(procSys, k))
		return strings.TrimSpace(string(b))
	}
	set("fs/inotify/max_user_instances", "128")
	set("fs/inotify/max_user_watches", "600000") // already above what is needed
	root := t.TempDir()
	lab := func(name string, nodes int) *Lab {
		spec := &Spec{Name: name}
		for i := 0; i < nodes; i++ {
			spec.Nodes = append(spec.Nodes, Node{Name: "n"})
		}
		l := New(spec, root)
		if err := os.MkdirAll(l.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := lab("a", 4), lab("b", 12)
	if err := a.raiseInotify(); err != nil {
		t.Fatal(err)
	}
	if got := get("fs/inotify/max_user_instances"); got != "384" {
		t.Errorf("after a 4-node lab: %s, want 384", got)
	}
	if err := b.raiseInotify(); err != nil {
		t.Fatal(err)
	}
	if got := get("fs/inotify/max_user_instances"); got != "896" || get("fs/inotify/max_user_watches") != "600000" {
		t.Errorf("after a 12-node lab: %s, watches %s", got, get("fs/inotify/max_user_watches"))
	}
	if err := a.restoreInotify(); err != nil {
		t.Fatal(err)
	}
	if got := get("fs/inotify/max_user_instances"); got != "896" {
		t.Errorf("lab a down while b is up: %s, want it left at 896", got)
	}
	os.RemoveAll(a.Dir)
	if err := b.restoreInotify(); err != nil {
		t.Fatal(err)
	}
	if got := get("fs/inotify/max_user_instances"); got != "128" || get("fs/inotify/max_user_watches") != "600000" {
		t.Errorf("the last lab down: %s and %s, want the workstation's 128 and 600000", got, get("fs/inotify/max_user_watches"))
	}
	if _, err := os.Stat(filepath.Join(root, "inotify.orig")); !os.IsNotExist(err) {
		t.Errorf("the record of the workstation's values is left: %v", err)
	}
}
