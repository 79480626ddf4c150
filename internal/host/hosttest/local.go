// Package hosttest has a host.Host that runs commands with this machine's
// own /bin/sh and files. It is a real shell and real files, not a
// simulation of SSH: tests use it to check scripts and file logic, and to
// count round trips (Calls), where a transport would only add latency.
package hosttest

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"

	"github.com/k8slab/k8slab/internal/fsatomic"
	"github.com/k8slab/k8slab/internal/host"
)

// Local runs everything on this machine as the test's user.
type Local struct {
	// Label names it (several Locals stand for several nodes); Env is
	// added to its commands' environment.
	Label string
	Env   []string
	mu    sync.Mutex
	// Commands is every command run, in order; Uploads every path written.
	Commands []string
	Uploads  []string
}

func (l *Local) Name() string {
	if l.Label != "" {
		return l.Label
	}
	return "local"
}

func (l *Local) Run(ctx context.Context, c host.Cmd) error {
	l.mu.Lock()
	l.Commands = append(l.Commands, c.Command)
	l.mu.Unlock()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", c.Command)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.Stdin, c.Stdout, c.Stderr
	cmd.Env = append(os.Environ(), l.Env...)
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &host.ExitError{Code: ee.ExitCode()}
	}
	return err
}

func (l *Local) Upload(_ context.Context, f host.File, r io.Reader) error {
	l.mu.Lock()
	l.Uploads = append(l.Uploads, f.Path)
	l.mu.Unlock()
	return fsatomic.WriteFile(f.Path, r, f.Mode)
}

func (l *Local) ReadFile(_ context.Context, p string) ([]byte, error) { return os.ReadFile(p) }

// Reset forgets the recorded commands and uploads.
func (l *Local) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.Commands, l.Uploads = nil, nil
}
