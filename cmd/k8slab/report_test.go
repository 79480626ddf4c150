package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

func writeReport(t *testing.T, dir, name string, ok bool, total int, phases map[string]int) string {
	var ps []string
	for _, p := range []string{"preflight", "provision", "control-plane"} {
		if ms, has := phases[p]; has {
			ps = append(ps, `{"phase":"`+p+`","status":"ok","duration_ms":`+itoa(ms)+`}`)
		}
	}
	okS := "true"
	if !ok {
		okS = "false"
	}
	body := `{"version":"k8slab.dev/report/v1","command":"reinstall","duration_ms":` + itoa(total) + `,"ok":` + okS + `,"hosts":[],"data":{"phases":[` + strings.Join(ps, ",") + `]}}`
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func itoa(n int) string { return strconv.Itoa(n) }
func TestReportCompareAndSummary(t *testing.T) {
	dir := t.TempDir()
	a := writeReport(t, dir, "a.json", true, 100000, map[string]int{"preflight": 4000, "provision": 60000, "control-plane": 30000})
	b := writeReport(t, dir, "b.json", true, 130000, map[string]int{"preflight": 4000, "provision": 90000, "control-plane": 30000})
	c := writeReport(t, dir, "c.json", false, 20000, map[string]int{"preflight": 5000})

	r := runCLI(t, nil, nil, "report", "compare", a, b)
	if r.code != 0 {
		t.Fatalf("compare: exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"provision             60.0s      90.0s     +30.0s     +50%", "total                100.0s     130.0s     +30.0s     +30%", "preflight              4.0s       4.0s      +0.0s      +0%"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("compare lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runCLI(t, nil, nil, "report", "summary", a, b)
	if r.code != 0 || !strings.Contains(r.stdout, "provision           2      60.0s      75.0s      90.0s") || !strings.Contains(r.stdout, "2 runs, 0 failed") {
		t.Errorf("summary: exit %d\n%s", r.code, r.stdout)
	}
	r = runCLI(t, nil, nil, "report", "summary", a, b, c)
	if r.code != exitFailed || !strings.Contains(r.stdout, "3 runs, 1 failed") || !strings.Contains(r.stdout, "preflight           3       4.0s       4.0s       5.0s") {
		t.Errorf("summary with a failed run: exit %d\n%s", r.code, r.stdout)
	}
	if r := runCLI(t, nil, nil, "report", "compare", a, filepath.Join(dir, "missing.json")); r.code != exitBadInput {
		t.Errorf("missing file: exit %d", r.code)
	}
}

// client-go's klog lines never reach k8slab's stderr.
func TestClientGoLogsNothing(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	quietClientGo()
	klog.ErrorS(errors.New("boom"), "Unexpected error when reading response body")
	klog.Flush()
	os.Stderr = stderr
	w.Close()
	if b, _ := io.ReadAll(r); len(b) > 0 {
		t.Errorf("client-go logged to stderr: %q", b)
	}
}
