package topology

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInotifyCheckedNeverChanged runs container labs' inotify check
// against a folder standing in for /proc/sys: four nodes fit the default
// 128 instances, twelve are refused naming the setting and the command
// that raises it, and neither writes a setting.
func TestInotifyCheckedNeverChanged(t *testing.T) {
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
	set("fs/inotify/max_user_watches", "8192")
	root := t.TempDir()
	lab := func(name string, nodes int) *Lab {
		spec := &Spec{Name: name}
		for i := 0; i < nodes; i++ {
			spec.Nodes = append(spec.Nodes, Node{Name: "n"})
		}
		return New(spec, root)
	}
	if err := lab("a", 4).checkInotify(); err != nil {
		t.Errorf("a 4-node lab at the default 128 instances: %v", err)
	}
	err := lab("b", 12).checkInotify()
	if err == nil || !strings.Contains(err.Error(), "fs.inotify.max_user_instances is 128, 12 container nodes need 272: sysctl -w fs.inotify.max_user_instances=272") ||
		strings.Contains(err.Error(), "max_user_watches") {
		t.Errorf("a 12-node lab at 128 instances: %v", err)
	}
	if get("fs/inotify/max_user_instances") != "128" || get("fs/inotify/max_user_watches") != "8192" {
		t.Errorf("a check changed the settings: %s, %s", get("fs/inotify/max_user_instances"), get("fs/inotify/max_user_watches"))
	}
}

// TestInotifyPutBackForAnEarlierLab: a lab brought up by an earlier
// k8slab, which raised the limits and kept the workstation's values,
// puts them back at its lab down, exactly, once no other such lab is up.
func TestInotifyPutBackForAnEarlierLab(t *testing.T) {
	procSys = t.TempDir()
	t.Cleanup(func() { procSys = "/proc/sys" })
	p := filepath.Join(procSys, "fs/inotify/max_user_instances")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("384\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	l := New(&Spec{Name: "old", Nodes: []Node{{Name: "n"}}}, root)
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.inotifyRecord(), []byte(`{"fs/inotify/max_user_instances":128}`), 0o644); err != nil {
		t.Fatal(err)
	}
	l.state.RaisedInotify = true
	if err := l.restoreInotify(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); strings.TrimSpace(string(b)) != "128" {
		t.Errorf("after the earlier lab's down: %q, want the workstation's 128", b)
	}
	if _, err := os.Stat(l.inotifyRecord()); !os.IsNotExist(err) {
		t.Errorf("the record of the workstation's values is left: %v", err)
	}
}
