package topology

import (
	"fmt"
	"github.com/k8slab/k8slab/internal/proc"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Proc is a daemon the lab started, identified by PID and start time so a
// recycled PID is never killed by mistake.
type Proc struct {
	Member string `json:"member"`
	Role   string `json:"role"`
	PID    int    `json:"pid"`
	Start  uint64 `json:"start"`
}

// running is true while the process exists and is not a zombie. PID 1 on
// these machines reaps late, so "kill -0 succeeds" would count zombies as
// alive: the state letter is what matters.
func (p Proc) running() bool { return proc.Running(p.PID, p.Start) }

// startDaemon starts args in its own session with output to logPath and
// reaps it in the background while this process lives.
func startDaemon(member, role, logPath string, args []string) (Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return Proc{}, err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Proc{}, fmt.Errorf("%s %s: %w", member, role, err)
	}
	go cmd.Wait()
	_, _, start, err := proc.Stat(cmd.Process.Pid)
	if err != nil {
		return Proc{}, fmt.Errorf("%s %s: exited at once (see %s)", member, role, logPath)
	}
	return Proc{Member: member, Role: role, PID: cmd.Process.Pid, Start: start}, nil
}

// descendants lists every process below pid: sshd forks a child per
// connection, and those children outlive a killed listener.
func descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, _, err := proc.Stat(p); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// kill stops the process and all its descendants with SIGKILL and waits
// until none of them runs any more.
func (p Proc) kill(timeout time.Duration) error {
	if !p.running() {
		return nil
	}
	if p.Role == "qemu" {
		// QEMU closes its qcow2 cleanly on SIGTERM; the overlay and its
		// snapshot are kept for the next boot.
		syscall.Kill(p.PID, syscall.SIGTERM)
		for deadline := time.Now().Add(timeout); p.running() && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	pids := append([]int{p.PID}, descendants(p.PID)...)
	return killPIDs(pids, timeout)
}

func killPIDs(pids []int, timeout time.Duration) error {
	type target struct {
		pid   int
		start uint64
	}
	var ts []target
	for _, pid := range pids {
		if _, _, start, err := proc.Stat(pid); err == nil {
			ts = append(ts, target{pid, start})
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(timeout)
	for _, t := range ts {
		for (Proc{PID: t.pid, Start: t.start}).running() {
			if time.Now().After(deadline) {
				return fmt.Errorf("pid %d still running after SIGKILL", t.pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// pidsInNetns lists the processes whose network namespace is the named
// one: anything a test left running inside the lab, whoever started it.
func pidsInNetns(path string) []int {
	var want syscall.Stat_t
	if err := syscall.Stat(path, &want); err != nil {
		return nil
	}
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			out = append(out, pid)
		}
	}
	return out
}
