package k8slab

import (
	"os/exec"
	"strings"
	"testing"
)

// layers orders the packages: each may import only packages of lower
// layers, so transports know nothing of installs and installs nothing of
// the command line (docs/design.md, "Layout").
var layers = [][]string{
	{"internal/host", "internal/proc", "internal/netns", "internal/phase", "internal/kube", "internal/fsatomic", "scripts/node"},
	{"internal/ssh", "internal/run", "internal/lock", "provision", "bootstrap", "calico", "internal/host/hosttest", "internal/ssh/sshtest"},
	{"internal/cluster", "topology"},
	{"internal/install", "internal/verify", "internal/kubespray", "topology/labtest"},
	{"cmd/k8slab", "cmd/k8slab-bundle", "cmd/k8slab-iptables-wrapper", "cmd/k8slab-probe", ""},
}

func TestNoUpwardImports(t *testing.T) {
	const mod = "github.com/k8slab/k8slab"
	layer := map[string]int{}
	for i, l := range layers {
		for _, p := range l {
			layer[p] = i
		}
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \",\"}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, " ")
		pkg = strings.TrimPrefix(strings.TrimPrefix(pkg, mod), "/")
		from, ok := layer[pkg]
		if !ok {
			t.Errorf("package %q has no layer: add it to layers", pkg)
			continue
		}
		for _, imp := range strings.Split(imports, ",") {
			if !strings.HasPrefix(imp, mod+"/") {
				continue
			}
			to := strings.TrimPrefix(imp, mod+"/")
			if l, ok := layer[to]; ok && l >= from {
				t.Errorf("%s (layer %d) imports %s (layer %d): only lower layers may be imported", pkg, from, to, l)
			}
		}
	}
}
