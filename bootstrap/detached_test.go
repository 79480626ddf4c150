package bootstrap

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/host/hosttest"
)

// TestDetached_SimulatedSystemd runs detached.sh through Detached.Run on
// this machine with stand-ins for systemctl and systemd-run (the real
// ones would start units here): systemd-run runs the command in the
// background with its output appended to the log, as the unit would. A
// step ends with its exit code, a failure carries the log's tail, a step
// still running from an earlier run is waited for, not started again.
func TestDetached_SimulatedSystemd(t *testing.T) {
	tests := []struct {
		name     string
		command  string
		running  bool // an earlier run's unit is still active
		wantErr  string
		wantSaid string
		poll     time.Duration // 20 ms unless set
	}{
		{"succeeds", "echo '[init] step one'; echo '[init] done'", false, "", "[init] done", 0},
		{"fails with the log's tail", "echo 'error execution phase preflight'; exit 3", false, "exited with 3", "error execution phase preflight", 0},
		{"already running: waited for", "", true, "", "already running since an earlier run: waiting for it", 0},
		// With a poll far longer than the step, its end is seen through its
		// lock on the first read: one follow, not a second one a poll later.
		{"ends between polls", "sleep 0.3; echo '[init] done'", false, "", "[init] done", 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			logs := filepath.Join(dir, "log")
			os.MkdirAll(bin, 0o755)
			state := "inactive"
			if tt.running {
				state = "active"
				os.MkdirAll(logs, 0o755)
				// The earlier run finishes on its own a moment later.
				go func() {
					time.Sleep(100 * time.Millisecond)
					os.WriteFile(filepath.Join(logs, "k8slab-test.status"), []byte("0\n"), 0o644)
				}()
			}
			stub := map[string]string{
				"systemctl": `case "$1" in show) echo ` + state + `;; esac; exit 0`,
				// systemd-run --quiet --unit U --collect -p StandardOutput=append:LOG -p ... /bin/sh -c CMD
				"systemd-run": `log=; while [ $# -gt 0 ]; do case "$1" in -p) log=${2#*append:}; shift 2;; --unit) shift 2;; --*) shift;; *) break;; esac; done
"$@" >> "$log" 2>&1 &`,
			}
			for n, body := range stub {
				os.WriteFile(filepath.Join(bin, n), []byte("#!/bin/sh\n"+body+"\n"), 0o755)
			}
			h := &hosttest.Local{Env: []string{"PATH=" + bin + ":" + os.Getenv("PATH")}}
			var said []string
			poll := tt.poll
			if poll == 0 {
				poll = 20 * time.Millisecond
			}
			d := Detached{Unit: "k8slab-test", Command: tt.command, Poll: poll, Dir: logs}
			err := d.Run(context.Background(), h, 10*time.Second, func(s string) { said = append(said, s) })
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "error execution phase preflight") {
				t.Errorf("the failure does not carry the log's tail: %v", err)
			}
			if !strings.Contains(strings.Join(said, "\n"), tt.wantSaid) {
				t.Errorf("said %q, want %q", said, tt.wantSaid)
			}
			starts, follows := 0, 0
			for _, c := range h.Commands {
				if strings.HasPrefix(c, "set -- 'start' ") {
					starts++
				}
				if strings.HasPrefix(c, "set -- 'follow' ") {
					follows++
				}
			}
			if poll > time.Second && follows != 1 {
				t.Errorf("read the step %d times, want once (its end seen through its lock)", follows)
			}
			if want := map[bool]int{true: 0, false: 1}[tt.running]; starts != want {
				t.Errorf("started %d times, want %d", starts, want)
			}
		})
	}
}
