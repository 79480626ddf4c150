package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// usageErrors makes every command answer a mistyped flag with one line
// and exit 2 (not the whole help on stdout), suggesting the flag meant.
func usageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError(c.Flags)
		usageErrors(c.Subcommands)
	}
}

func onUsageError(flags []cli.Flag) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
			name = strings.TrimLeft(name, "-")
			var names []string
			for _, f := range flags {
				names = append(names, f.Names()...)
			}
			msg = "unknown flag --" + name
			if s := closest(name, names); s != "" {
				msg += fmt.Sprintf(" (did you mean --%s?)", s)
			}
		}
		return badInput("%s", msg)
	}
}

// unknownCommand is the app's action: a word that names no command is
// refused with a suggestion; no word at all shows the help.
func unknownCommand(c *cli.Context) error {
	if c.NArg() == 0 {
		return cli.ShowAppHelp(c)
	}
	var names []string
	for _, cmd := range c.App.Commands {
		if !cmd.Hidden {
			names = append(names, cmd.Names()...)
		}
	}
	msg := fmt.Sprintf("unknown command %s", c.Args().First())
	if s := closest(c.Args().First(), names); s != "" {
		msg += fmt.Sprintf(", did you mean %s?", s)
	}
	return badInput("%s (k8slab --help lists them)", msg)
}

// closest is the candidate nearest to word: a prefix either way, else
// at most two edits away; "" when none is close.
func closest(word string, candidates []string) string {
	best, bestD := "", 3
	sort.Strings(candidates)
	for _, c := range candidates {
		d := editDistance(word, c)
		if strings.HasPrefix(c, word) || strings.HasPrefix(word, c) {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
