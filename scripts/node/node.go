// Package node holds the shell scripts k8slab runs on nodes, as real
// files (shellcheck reads them; `make vet`), embedded in the binary.
//
// A script takes its parameters as positional arguments, never spliced
// into its text, and reports in "key=value" lines that Parse reads: one
// format and one parser for every script.
package node

import (
	"embed"
	"fmt"
	"strings"
)

//go:embed *.sh
var files embed.FS

// Script is a script's text, for callers that fold it into a larger one
// (in a subshell when it sets positional parameters or exits).
func Script(name string) string {
	b, err := files.ReadFile(name)
	if err != nil {
		// The names are constants of this module: a wrong one is a bug
		// every test of the caller finds.
		panic(fmt.Sprintf("node script %s: %v", name, err))
	}
	return string(b)
}

// Command is the command line that runs the script with args as its
// positional parameters ($1, $2, ...; none when args is empty, also
// inside a larger script that has some), each quoted for the remote shell.
func Command(name string, args ...string) string {
	var b strings.Builder
	b.WriteString("set --")
	for _, a := range args {
		b.WriteString(" '" + strings.ReplaceAll(a, "'", `'"'"'`) + "'")
	}
	return b.String() + "\n" + Script(name)
}

// Subshell is Command in a subshell, for folding the script into a
// larger one: its parameters, exit and set -e stay its own. The result
// ends without a newline, so a caller may add "|| ...".
func Subshell(name string, args ...string) string {
	return "(\n" + Command(name, args...) + ")"
}

// Values is a script's "key=value" output: every value of every key, in
// the order the lines came. Lines without "=" are not values.
type Values map[string][]string

// Parse reads a script's output.
func Parse(out string) Values {
	v := Values{}
	for _, line := range strings.Split(out, "\n") {
		k, val, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		v[k] = append(v[k], strings.TrimRight(val, "\r"))
	}
	return v
}

// Get is key's last value ("" when the script printed none).
func (v Values) Get(key string) string {
	if vs := v[key]; len(vs) > 0 {
		return vs[len(vs)-1]
	}
	return ""
}

// All is every value of key, in order.
func (v Values) All(key string) []string { return v[key] }
