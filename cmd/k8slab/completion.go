package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// The scripts ask k8slab itself for candidates (urfave/cli's
// --generate-bash-completion), so they never go stale.
const bashCompletion = `_k8slab_complete() {
  local cur opts
  cur="${COMP_WORDS[COMP_CWORD]}"
  opts=$("${COMP_WORDS[0]}" "${COMP_WORDS[@]:1:$COMP_CWORD-1}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _k8slab_complete k8slab
`

const zshCompletion = `#compdef k8slab
_k8slab() {
  local -a opts
  opts=("${(@f)$(${words[1]} ${words[@]:1:#words[@]-2} --generate-bash-completion 2>/dev/null)}")
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
