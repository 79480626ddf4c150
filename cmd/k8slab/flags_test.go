package main

import (
	"io"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestEveryCommandParsesItsFlags builds every command's flag set, as a
// user's first invocation would: reinstall panicked on a flag defined
// twice (--fix-machine-id) and no test ran it.
func TestEveryCommandParsesItsFlags(t *testing.T) {
	var walk func(prefix []string, cmds []*cli.Command)
	walk = func(prefix []string, cmds []*cli.Command) {
		for _, c := range cmds {
			path := append(append([]string{}, prefix...), c.Name)
			t.Run(strings.Join(path, " "), func(t *testing.T) {
				seen := map[string]bool{}
				for _, f := range c.Flags {
					for _, n := range f.Names() {
						if seen[n] {
							t.Errorf("flag --%s defined twice", n)
						}
						seen[n] = true
					}
				}
				app := newApp()
				app.Writer, app.ErrWriter = io.Discard, io.Discard
				if err := app.Run(append(append([]string{"k8slab"}, path...), "--help")); err != nil {
					t.Errorf("%v", err)
				}
			})
			walk(path, c.Subcommands)
		}
	}
	walk(nil, newApp().Commands)
}
