// Package host defines the small surface every k8slab step uses to act on a
// machine. Phases depend on this interface only, so the same phase runs
// against a real sshd, a VM, or a test double.
package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Cmd is one command line for the remote shell. Commands run as root: a
// transport that logs in as another user wraps them in sudo.
type Cmd struct {
	// Command is interpreted by the remote POSIX shell.
	Command string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
}

// File describes where and how an upload lands.
type File struct {
	Path string
	Mode fs.FileMode
	// UID and GID own the file; 0 (root) unless set.
	UID, GID int
	// Size lets the transport report progress on large files; 0 if unknown.
	Size int64
}

// Host is the contract between phases and a transport.
type Host interface {
	// Name is how the host is referred to in errors and logs (usually its address).
	Name() string
	// Run executes cmd; a non-zero exit is returned as *ExitError.
	Run(ctx context.Context, cmd Cmd) error
	// Upload writes r to f.Path atomically (temp file + rename), with mode and owner.
	Upload(ctx context.Context, f File, r io.Reader) error
	// ReadFile returns a remote file's content (root-readable files included).
	ReadFile(ctx context.Context, path string) ([]byte, error)
}

// ExitError reports a command that ran and exited non-zero.
type ExitError struct {
	Code int
	// Stderr holds the tail of standard error, for the error message.
	Stderr string
}

func (e *ExitError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return fmt.Sprintf("exit status %d: %s", e.Code, msg)
}

// ExitCode returns the remote exit code carried by err, 0 for nil and -1
// when the command never produced one (connection lost, timeout).
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return -1
}

// Output runs command and returns its standard output. Standard error is
// kept for the error message, so a failure says why.
func Output(ctx context.Context, h Host, command string) (string, error) {
	var out, errb bytes.Buffer
	err := h.Run(ctx, Cmd{Command: command, Stdout: &out, Stderr: &tailWriter{buf: &errb}})
	var ee *ExitError
	if errors.As(err, &ee) && ee.Stderr == "" {
		ee.Stderr = errb.String()
	}
	return out.String(), err
}

// tailWriter keeps only the last 4 KiB: enough for an error message without
// holding a chatty command's whole stderr in memory.
type tailWriter struct{ buf *bytes.Buffer }

const tailMax = 4 << 10

func (w *tailWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if w.buf.Len() > tailMax {
		b := w.buf.Bytes()
		keep := append([]byte(nil), b[len(b)-tailMax:]...)
		w.buf.Reset()
		w.buf.Write(keep)
	}
	return len(p), nil
}

// Tail returns an io.Writer that keeps the last few KiB written to it and a
// function returning them; transports use it to put stderr into ExitError.
func Tail() (io.Writer, func() string) {
	var b bytes.Buffer
	return &tailWriter{buf: &b}, b.String
}

// Quote quotes s for a POSIX shell.
func Quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%_-+=:,./") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}
