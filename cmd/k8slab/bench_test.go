package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/ssh/sshtest"
	"github.com/k8slab/k8slab/topology"
	"github.com/k8slab/k8slab/topology/labtest"
)

// benchExec runs `k8slab exec -- true` as a child process and reports its
// wall time and peak RSS: the figures a user sees, connect + auth + exec
// for every node, measured on the binary and not on the test process.
func benchExec(b *testing.B, prefix []string, env []string) {
	b.Helper()
	var worst time.Duration
	var peakKB int64
	for i := 0; i < b.N; i++ {
		argv := append(append([]string{}, prefix...), binPath, "exec", "--output", "json", "--", "true")
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), env...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		worst = max(worst, d)
		peakKB = max(peakKB, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
	}
	b.ReportMetric(worst.Seconds(), "worst-wall-s")
	b.ReportMetric(float64(peakKB)/1024, "peak-RSS-MB")
}

// BenchmarkExecFanout200 uses SIMULATED endpoints (sshtest: in-process
// x/crypto/ssh servers on loopback), as the issue allows: it measures
// k8slab's own fan-out cost. Target: <= 2 s and <= 150 MB on 2 cores.
func BenchmarkExecFanout200(b *testing.B) {
	dir := b.TempDir()
	srv, err := sshtest.Start(200, dir)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	env := []string{
		"K8SLAB_NODES=" + strings.Join(srv.Addrs, ","),
		"K8SLAB_SSH_KEY=" + srv.KeyFile,
		"K8SLAB_KNOWN_HOSTS=" + filepath.Join(dir, "known_hosts"),
		"K8SLAB_LOG_DIR=" + filepath.Join(dir, "logs"),
		"SSH_AUTH_SOCK=",
	}
	b.ResetTimer()
	benchExec(b, nil, env)
}

// BenchmarkExecLab4 runs against the four real sshd nodes of the
// namespace lab, across the BIRD fabric.
func BenchmarkExecLab4(b *testing.B) {
	lab := labtest.Up(b)
	dir := b.TempDir()
	env := []string{
		"K8SLAB_NODES=" + strings.Join(lab.Spec.NodeAddrs(), ","),
		"K8SLAB_SSH_KEY=" + lab.KeyFile(),
		"K8SLAB_KNOWN_HOSTS=" + filepath.Join(dir, "known_hosts"),
		"K8SLAB_LOG_DIR=" + filepath.Join(dir, "logs"),
		"SSH_AUTH_SOCK=",
	}
	b.ResetTimer()
	benchExec(b, []string{"ip", "netns", "exec", lab.NS(topology.WorkstationName)}, env)
}
