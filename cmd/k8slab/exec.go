package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/urfave/cli/v2"
)

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run one command on every node in parallel",
		ArgsUsage: "-- COMMAND [ARGS...]",
		Flags:     connFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return badInput("exec: no command given (k8slab exec --nodes ... -- COMMAND)")
			}
			command := strings.Join(c.Args().Slice(), " ")
			s, err := openNodeSession(c, "exec")
			if err != nil {
				return err
			}
			defer s.Close()
			var mu sync.Mutex
			outputs := map[string]*bytes.Buffer{}
			ctx := c.Context
			s.runner.Run(ctx, oneShot(run.Step{Name: "exec", Do: func(ctx context.Context, t *run.Task) error {
				var buf bytes.Buffer
				mu.Lock()
				outputs[t.Host.Name()] = &buf
				mu.Unlock()
				// Stdout and stderr interleave as on a terminal; the log
				// gets the same stream.
				w := io.MultiWriter(&lockedWriter{w: &buf, mu: &mu}, t.Log)
				return t.Host.Run(ctx, host.Cmd{Command: command, Stdout: w, Stderr: w})
			}}))
			data := map[string]map[string]any{}
			for h, b := range outputs {
				data[h] = map[string]any{"output": b.String()}
			}
			return s.finish(data, nil, func() {
				for _, h := range s.hosts {
					if b, ok := outputs[h.Name()]; ok {
						writePrefixed(os.Stdout, h.Name(), s.runner.Redact(b.String()))
					}
				}
			})
		},
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// writePrefixed prints a node's output with its name on every line, so
// interleaved results stay attributable (and greppable).
func writePrefixed(w io.Writer, name, out string) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Fprintf(w, "[%s] %s\n", name, sc.Text())
	}
}
