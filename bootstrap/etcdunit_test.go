package bootstrap

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// systemd ignores a directive it does not know with only a log line, so a
// misspelt priority would silently leave etcd at the default weight:
// systemd-analyze verify names every key it would ignore.
func TestEtcdUnitFileVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// verify also checks that ExecStart exists; etcd is not installed here.
	unit := strings.Replace(EtcdUnitFile, "ExecStart=/usr/local/bin/etcd", "ExecStart="+self, 1)
	unit = strings.Replace(unit, "EnvironmentFile="+EtcdEnvFile, "EnvironmentFile=-"+EtcdEnvFile, 1)
	path := filepath.Join(t.TempDir(), "etcd.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	var complaints []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, path) {
			complaints = append(complaints, l)
		}
	}
	if err != nil || len(complaints) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, strings.Join(complaints, "\n"))
	}
	for _, want := range []string{"\nCPUWeight=1000\n", "\nIOSchedulingClass=best-effort\n", "\nIOSchedulingPriority=0\n"} {
		if !strings.Contains(EtcdUnitFile, want) {
			t.Errorf("etcd's unit lacks %q", strings.TrimSpace(want))
		}
	}
}
