package node

import (
	"io/fs"
	"os/exec"
	"slices"
	"testing"
)

// TestScriptsParse has dash and bash (a node's sh and root's usual login
// shell) read every script as sent.
func TestScriptsParse(t *testing.T) {
	names, err := fs.Glob(files, "*.sh")
	if err != nil || len(names) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, sh := range []string{"dash", "bash"} {
		for _, n := range names {
			if out, err := exec.Command(sh, "-n", "-c", Command(n, "arg")).CombinedOutput(); err != nil {
				t.Errorf("%s %s: %v\n%s", sh, n, err, out)
			}
		}
	}
}

// TestCommandPassesArgumentsVerbatim: arguments reach the script as its
// positional parameters, whatever they contain, never as shell text.
func TestCommandPassesArgumentsVerbatim(t *testing.T) {
	args := []string{"172.31.3.11", "it's", "$(touch /tmp/k8slab-injected)", "a b", ""}
	// preflight-probe.sh prints route=... for $1; use the shell to echo
	// every parameter back through the same prefix Command writes.
	for _, args := range [][]string{args, nil} {
		// Inside a larger script with parameters of its own: the script
		// sees exactly args.
		cmd := Command("versions.sh", args...)
		prefix := cmd[:len(cmd)-len(Script("versions.sh"))]
		out, err := exec.Command("sh", "-c", prefix+`for a in "$@"; do echo "arg=$a"; done`, "sh", "outer1", "outer2").Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := Parse(string(out)).All("arg"); !slices.Equal(got, args) {
			t.Errorf("arguments %q, want %q", got, args)
		}
	}
}

func TestParse(t *testing.T) {
	v := Parse("lap=units\nremoved=kubelet running\nnoise without equals\nremoved=kubeadm state (x=y)\r\nkey with space=no\n=empty key\nchanged=0\nchanged=1\n")
	if got := v.All("removed"); !slices.Equal(got, []string{"kubelet running", "kubeadm state (x=y)"}) {
		t.Errorf("removed %q", got)
	}
	if v.Get("changed") != "1" || v.Get("missing") != "" || len(v.All("missing")) != 0 {
		t.Errorf("changed %q, missing %q", v.Get("changed"), v.All("missing"))
	}
	if _, ok := v["key with space"]; ok || len(v) != 3 {
		t.Errorf("keys %v, want lap, removed, changed", v)
	}
}
