package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	nodescript "github.com/k8slab/k8slab/scripts/node"
)

// TestE2EKubeadmResetKeepsExternalEtcd runs reset's kubeadm step with the
// bundle's real kubeadm, chrooted (--rootfs) into a temporary directory
// and in a network namespace of its own: on a node with k8slab's etcd
// unit, the member's data in /var/lib/etcd survives kubeadm reset; on a
// node without one kubeadm deletes it — what happened to kube-node1's
// member on the emulated lab. Either way it reads nothing from the API server.
func TestE2EKubeadmResetKeepsExternalEtcd(t *testing.T) {
	bundle := os.Getenv("K8SLAB_BUNDLE")
	if bundle == "" || (os.Getenv("K8SLAB_E2E") == "" && os.Getenv("K8SLAB_E2E_INSTALL") == "") {
		t.Skip("needs the offline bundle's kubeadm: run with make e2e")
	}
	if os.Geteuid() != 0 {
		t.Skip("kubeadm --rootfs chroots: needs root")
	}
	tests := []struct {
		name     string
		etcdUnit bool
		walKept  bool
	}{
		{"external etcd member", true, true},
		{"no etcd unit (stacked or not a member)", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			wal := filepath.Join(root, "var/lib/etcd/member/wal/0000000000000000-0000000000000000.wal")
			for _, d := range []string{filepath.Dir(wal), filepath.Join(root, "etc/kubernetes/manifests"), filepath.Join(root, "var/log"), filepath.Join(root, "etc/systemd/system")} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			os.WriteFile(wal, []byte("member data"), 0o600)
			// An admin.conf as on the control plane: kubeadm would read
			// the cluster's config through it (here: lo is down, it fails).
			os.WriteFile(filepath.Join(root, "etc/kubernetes/admin.conf"), []byte(adminConf), 0o600)
			if tt.etcdUnit {
				os.WriteFile(filepath.Join(root, "etc/systemd/system/etcd.service"), []byte("[Service]\n"), 0o644)
			}
			cmd := exec.Command("unshare", "--net", "sh", "-c", nodescript.Command("reset.sh", "kubeadm_reset"))
			cmd.Env = append(os.Environ(), "PATH="+filepath.Join(bundle, "bin")+":"+os.Getenv("PATH"), "K8SLAB_RESET_ROOT="+root)
			out, err := cmd.CombinedOutput()
			log, _ := os.ReadFile(filepath.Join(root, "var/log/k8slab-reset.log"))
			if err != nil || !strings.Contains(string(out), "removed=kubeadm state\n") {
				t.Fatalf("reset step: %v\n%s\nkubeadm:\n%s", err, out, log)
			}
			if _, err := os.Stat(wal); (err == nil) != tt.walKept {
				t.Errorf("etcd's WAL kept: %v, want %v\nkubeadm:\n%s", err == nil, tt.walKept, log)
			}
			if strings.Contains(string(log), "kubeadm-config") {
				t.Errorf("kubeadm reset read the cluster's config through admin.conf:\n%s", log)
			}
			if _, err := os.Stat(filepath.Join(root, "etc/kubernetes/admin.conf")); err == nil {
				t.Errorf("admin.conf left behind\nkubeadm:\n%s", log)
			}
		})
	}
}

const adminConf = `apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: not-a-secret
contexts:
- name: admin@lab
  context:
    cluster: lab
    user: admin
current-context: admin@lab
`
