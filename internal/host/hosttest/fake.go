package hosttest

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"

	"github.com/k8slab/k8slab/internal/host"
)

// Fake is a recording host.Host that runs nothing: every command, upload
// and read is recorded in order, and a command's output and exit code
// come from the first Rule whose Match is in its text. It is for unit
// tests of a phase's decisions (which commands, in which order, what is
// skipped on a re-run, how a failure is reported), not of the scripts
// themselves — those run for real under Local and on the labs.
type Fake struct {
	Label string
	Rules []Rule
	// Files are what ReadFile returns; uploads are written here too.
	Files map[string][]byte

	mu  sync.Mutex
	log []string
}

// Rule answers the commands whose text contains Match.
type Rule struct {
	Match  string
	Stdout string
	Code   int
}

func (f *Fake) Name() string {
	if f.Label != "" {
		return f.Label
	}
	return "fake"
}

func (f *Fake) record(entry string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, entry)
}

// Run records "run: <command>" and answers by the first matching rule;
// a command no rule matches exits 0 with no output.
func (f *Fake) Run(_ context.Context, c host.Cmd) error {
	f.record("run: " + c.Command)
	for _, r := range f.Rules {
		if strings.Contains(c.Command, r.Match) {
			if c.Stdout != nil {
				io.WriteString(c.Stdout, r.Stdout)
			}
			if r.Code != 0 {
				return &host.ExitError{Code: r.Code, Stderr: fmt.Sprintf("(fake: rule %q)", r.Match)}
			}
			return nil
		}
	}
	return nil
}

// Upload records "upload: <path>" and keeps the content in Files.
func (f *Fake) Upload(_ context.Context, file host.File, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	f.record("upload: " + file.Path)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Files == nil {
		f.Files = map[string][]byte{}
	}
	f.Files[file.Path] = b
	return nil
}

// ReadFile records "read: <path>" and returns Files[path].
func (f *Fake) ReadFile(_ context.Context, p string) ([]byte, error) {
	f.record("read: " + p)
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.Files[p]
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: p, Err: fs.ErrNotExist}
	}
	return b, nil
}

// Log is everything done so far, in order.
func (f *Fake) Log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// Steps is Log with each entry cut to its first line (a node script's
// is its arguments), for readable test failures.
func (f *Fake) Steps() []string {
	out := f.Log()
	for i, e := range out {
		first, _, cut := strings.Cut(e, "\n")
		if len(first) > 100 {
			first, cut = first[:100], true
		}
		if cut {
			first += " …"
		}
		out[i] = first
	}
	return out
}

// Did reports whether an entry of the log contains s.
func (f *Fake) Did(s string) bool {
	for _, e := range f.Log() {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}
