// Package proc reads Linux process identity: a PID together with its
// start time names one process, so a recycled PID is never mistaken for it.
package proc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat returns a process's state letter, parent PID and start time (clock
// ticks since boot) from /proc/<pid>/stat.
func Stat(pid int) (state byte, ppid int, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	// comm may hold spaces and parentheses: fields start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0, 0, 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 20 {
		return 0, 0, 0, fmt.Errorf("pid %d: short stat", pid)
	}
	ppid, _ = strconv.Atoi(f[1])
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], ppid, start, nil
}

// Running is true while pid is the process that started at start and is
// not a zombie (PID 1 on these machines reaps late).
func Running(pid int, start uint64) bool {
	state, _, s, err := Stat(pid)
	return err == nil && s == start && state != 'Z' && state != 'X'
}
