package topology

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// OutsideLabs names the lab that owns an address while this process is
// outside it, reading the labs' state files once for every address.
func TestOutsideLabs(t *testing.T) {
	root := t.TempDir()
	for name, addrs := range map[string][]string{"one": {"172.31.3.11", "172.31.3.12"}, "two": {"10.9.0.1"}} {
		b, _ := json.Marshal(labState{Name: name, Addrs: addrs})
		os.MkdirAll(filepath.Join(root, name), 0o700)
		if err := os.WriteFile(filepath.Join(root, name, "state.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	outside := OutsideLabs(root)
	os.RemoveAll(root) // read once: later checks need no file
	for addr, want := range map[string]string{"172.31.3.12": "one", "10.9.0.1": "two", "192.0.2.1": ""} {
		if got := outside(addr); got != want {
			t.Errorf("OutsideLabs(%s) = %q, want %q", addr, got, want)
		}
	}
}
