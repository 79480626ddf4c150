package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRegressionScript_SimulatedK8slab runs scripts/regression.sh with a
// stand-in k8slab that records its arguments: what the script passes and
// how it counts a failed cycle. The real commands run in the VM e2e.
func TestRegressionScript_SimulatedK8slab(t *testing.T) {
	script, _ := filepath.Abs("../../scripts/regression.sh")
	cases := []struct {
		name       string
		env        []string
		wantVerify string
		wantExit   bool
		wantLine   string
	}{
		{"verify keeps its own settle by default", nil, "verify --output json --nodes 172.31.3.11", true, "2 cycles, 0 failed"},
		{"SETTLE reaches verify only", []string{"SETTLE=10m"}, "verify --output json --settle 10m --nodes 172.31.3.11", true, "2 cycles, 0 failed"},
		{"a red verify fails the run", []string{"VERIFY_RC=3"}, "verify --output json --nodes 172.31.3.11", false, "cycle 1: reinstall exit 0, verify exit 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			stub := filepath.Join(dir, "k8slab")
			os.WriteFile(stub, []byte(`#!/bin/sh
echo "$*" >> "$ARGS"
case "$1" in
reinstall) echo '{"duration_ms": 1000, "ok": true}' ;;
verify) exit ${VERIFY_RC:-0} ;;
esac
`), 0o755)
			args := filepath.Join(dir, "args")
			cmd := exec.Command("bash", script, "2", "--nodes", "172.31.3.11")
			cmd.Env = append(append(os.Environ(), "K8SLAB="+stub, "OUT="+filepath.Join(dir, "out"), "ARGS="+args), c.env...)
			out, err := cmd.CombinedOutput()
			if (err == nil) != c.wantExit || !strings.Contains(string(out), c.wantLine) {
				t.Errorf("exit %v, output:\n%s", err, out)
			}
			b, _ := os.ReadFile(args)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			want := []string{"reinstall --yes --output json --nodes 172.31.3.11", c.wantVerify,
				"reinstall --yes --output json --nodes 172.31.3.11", c.wantVerify, "report summary"}
			if len(lines) != len(want) {
				t.Fatalf("k8slab ran %d times, want %d:\n%s", len(lines), len(want), b)
			}
			for i := range want {
				if !strings.HasPrefix(lines[i], want[i]) {
					t.Errorf("call %d: %q, want %q", i+1, lines[i], want[i])
				}
			}
		})
	}
}
