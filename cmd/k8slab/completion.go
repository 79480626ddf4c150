package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// The scripts ask k8slab itself for candidates (urfave/cli's
// --generate-bash-completion), so they never go stale.
const bashCompletion = `_k8slab_complete() {
  local cur opts
  cur="${COMP_WORDS[COMP_CWORD]}"
  opts=$("${COMP_WORDS[0]}" "${COMP_WORDS[@]:1:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _k8slab_complete k8slab
`

const zshCompletion = `#compdef k8slab
_k8slab() {
  local -a opts
  opts=("${(@f)$(${words[1]} ${words[@]:1:$CURRENT-1} --generate-bash-completion 2>/dev/null)}")
  _describe 'values' opts
}
compdef _k8slab k8slab
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: source <(k8slab completion bash)",
		ArgsUsage: "bash|zsh",
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, zshCompletion)
			default:
				return badInput("completion: want bash or zsh, got %q", c.Args().First())
			}
			return nil
		},
	}
}

// flagValues are the values completion offers after a flag.
func flagValues() map[string][]string {
	return map[string][]string{
		"calico-encapsulation": {"IPIP", "VXLAN", "None"},
		"calico-bgp":           {"mesh", "as-per-rack"},
		"dialect":              {"bird2", "bird1"},
		"kube-proxy-mode":      {"iptables", "nftables"},
		"host-key-policy":      {"strict", "accept-new", "insecure"},
		"output":               {"text", "json"},
		"only":                 phaseNames(),
	}
}

// completions answers the completion scripts for one command: after a
// flag that takes known values, those values; for a word starting with
// "-", the command's flags; else its subcommands. words are what the
// script passed: the command line up to and with the word being
// completed.
func completions(words []string, flags []cli.Flag, subcommands []*cli.Command) []string {
	cur, prev := "", ""
	if n := len(words); n > 0 {
		cur = words[n-1]
		if n > 1 {
			prev = words[n-2]
		}
	}
	if strings.HasPrefix(prev, "-") {
		if v, ok := flagValues()[strings.TrimLeft(prev, "-")]; ok {
			return v
		}
	}
	var out []string
	if strings.HasPrefix(cur, "-") {
		for _, f := range flags {
			if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
				continue
			}
			for _, n := range f.Names() {
				if len(n) > 1 {
					out = append(out, "--"+n)
				}
			}
		}
		return out
	}
	for _, c := range subcommands {
		if !c.Hidden {
			out = append(out, c.Name)
		}
	}
	return out
}

// completeAll gives every command (and the app) its completions.
func completeAll(app *cli.App) {
	words := func() []string {
		var out []string
		for _, a := range os.Args[1:] {
			if a != "--generate-bash-completion" {
				out = append(out, a)
			}
		}
		return out
	}
	var walk func(cmds []*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c := c
			c.BashComplete = func(*cli.Context) {
				for _, s := range completions(words(), c.Flags, c.Subcommands) {
					fmt.Println(s)
				}
			}
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
	app.BashComplete = func(*cli.Context) {
		for _, s := range completions(words(), app.Flags, app.Commands) {
			fmt.Println(s)
		}
	}
}
