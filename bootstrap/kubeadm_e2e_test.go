package bootstrap

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EKubeadmValidatesRenderedConfig runs the bundle's real kubeadm
// (make e2e sets K8SLAB_BUNDLE) over every configuration k8slab renders.
func TestE2EKubeadmValidatesRenderedConfig(t *testing.T) {
	if os.Getenv("K8SLAB_E2E") == "" {
		t.Skip("needs the bundle's kubeadm: run with make e2e")
	}
	kubeadm := filepath.Join(os.Getenv("K8SLAB_BUNDLE"), "bin", "kubeadm")
	validate := func(name string, cfg []byte) error {
		f := filepath.Join(t.TempDir(), name+".yaml")
		os.WriteFile(f, cfg, 0o644)
		out, err := exec.Command(kubeadm, "config", "validate", "--config", f).CombinedOutput()
		if err != nil {
			return &exec.ExitError{Stderr: out}
		}
		return nil
	}
	external, _ := RenderInit(referenceInit())
	stackedIn := referenceInit()
	stackedIn.EtcdEndpoints, stackedIn.ProxyMode = nil, "iptables"
	stacked, _ := RenderInit(stackedIn)
	join, err := RenderJoin(JoinInput{Node: Node{Name: "kube-node3", IP: "172.31.4.11"}, APIServer: "172.31.3.11:6443",
		Token: "abcdef.0123456789abcdef", CACertHash: "sha256:" + strings.Repeat("ab", 32), Wait: referenceInit().Wait})
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string][]byte{"init-external-etcd": external, "init-stacked-etcd": stacked, "join": join} {
		if err := validate(name, cfg); err != nil {
			t.Errorf("kubeadm rejects %s: %s", name, err.(*exec.ExitError).Stderr)
		}
	}
	// The validator is strict: a field kubeadm does not know fails.
	if err := validate("bad", append(join, []byte("bogusField: 1\n")...)); err == nil {
		t.Error("kubeadm accepted an unknown field: this check proves nothing")
	}
}
