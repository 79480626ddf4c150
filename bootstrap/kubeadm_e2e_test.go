package bootstrap

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestE2EKubeadmTakesInitConfig hands the rendered init configuration and
// the probe patches to the bundle's real kubeadm: it must accept the
// config, issue ECDSA keys and write static pods with the relaxed liveness
// probes. Only into temporary directories (the certificates directory is
// set in the config; manifests go to kubeadm's dry-run directory).
func TestE2EKubeadmTakesInitConfig(t *testing.T) {
	bundle := os.Getenv("K8SLAB_BUNDLE")
	if bundle == "" || (os.Getenv("K8SLAB_E2E") == "" && os.Getenv("K8SLAB_E2E_INSTALL") == "") {
		t.Skip("needs the offline bundle's kubeadm: run with make e2e")
	}
	kubeadm := filepath.Join(bundle, "bin", "kubeadm")
	dir := t.TempDir()
	cfg, err := RenderInit(InitInput{
		ClusterName: "lab", KubernetesVersion: "v1.37.2", ControlPlane: Node{Name: "kube-node1", IP: "172.31.3.11"},
		ServiceCIDR: "172.31.64.0/18", PodCIDR: "172.31.128.0/18", EtcdEndpoints: []string{"https://172.31.3.11:2379"},
		Token: "abcdef.0123456789abcdef", ControlPlaneIsWorker: true, ProxyMode: "nftables", Wait: 40 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	patches, pki := filepath.Join(dir, "patches"), filepath.Join(dir, "pki")
	os.MkdirAll(patches, 0o755)
	for name, p := range ProbePatches() {
		os.WriteFile(filepath.Join(patches, name), []byte(p), 0o644)
	}
	text := strings.Replace(string(cfg), PatchesDir, patches, 1)
	text = strings.Replace(text, "kind: ClusterConfiguration\n", "kind: ClusterConfiguration\ncertificatesDir: "+pki+"\n", 1)
	path := filepath.Join(dir, "init.yaml")
	os.WriteFile(path, []byte(text), 0o600)
	_, etcBefore := os.Stat("/etc/kubernetes")
	run := func(args ...string) {
		cmd := exec.Command(kubeadm, args...)
		cmd.Env = append(os.Environ(), "KUBEADM_INIT_DRYRUN_DIR="+filepath.Join(dir, "dryrun"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubeadm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("init", "phase", "certs", "ca", "--config", path)
	run("init", "phase", "control-plane", "all", "--config", path, "--dry-run")
	if _, err := os.Stat("/etc/kubernetes"); os.IsNotExist(etcBefore) && err == nil {
		t.Errorf("kubeadm wrote to this machine's /etc/kubernetes")
	}

	b, _ := os.ReadFile(filepath.Join(pki, "ca.key"))
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("ca.key: %q", b)
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		if k, err2 := x509.ParseECPrivateKey(blk.Bytes); err2 == nil {
			key = k
		}
	}
	if k, ok := key.(*ecdsa.PrivateKey); !ok || k.Curve.Params().Name != "P-256" {
		t.Errorf("CA key is %T (%s), want ECDSA P-256", key, blk.Type)
	}
	for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		m, err := os.ReadFile(filepath.Join(dir, "dryrun", c+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, probe := range []string{"livenessProbe:", "startupProbe:"} {
			p, ok := probeBlock(string(m), probe)
			if !ok {
				t.Errorf("%s has no %s", c, probe)
				continue
			}
			if !strings.Contains(p, "failureThreshold: 60") || !strings.Contains(p, "timeoutSeconds: 30") {
				t.Errorf("%s %s not patched:\n%s", c, probe, p)
			}
			// kubeadm's host, port and scheme stay; only the path changes.
			if c == "kube-apiserver" && (!strings.Contains(p, "path: "+APIServerLivePath) || !strings.Contains(p, "host: 172.31.3.11") || !strings.Contains(p, "scheme: HTTPS")) {
				t.Errorf("%s %s does not ask %s of 172.31.3.11 over HTTPS:\n%s", c, probe, APIServerLivePath, p)
			}
		}
		// kubeadm's readiness probe (path, port) stays, asked every 10 s.
		if c != "kube-controller-manager" {
			if p, _ := probeBlock(string(m), "readinessProbe:"); !strings.Contains(p, "path: /readyz\n") || !strings.Contains(p, "periodSeconds: "+ReadinessPeriod+"\n") || !strings.Contains(p, "timeoutSeconds: 30") {
				t.Errorf("%s readiness probe not /readyz every %s s:\n%s", c, ReadinessPeriod, m)
			}
		} else if strings.Contains(string(m), "readinessProbe:") {
			t.Errorf("%s got a readiness probe:\n%s", c, m)
		}
		if c == "kube-apiserver" && !strings.Contains(string(m), "path: /readyz\n") {
			t.Errorf("kube-apiserver's readiness probe lost /readyz (and its etcd check):\n%s", m)
		}
		for _, flag := range []string{"--etcd-readycheck-timeout=", "--etcd-healthcheck-timeout="} {
			if c == "kube-apiserver" && !strings.Contains(string(m), flag+APIServerEtcdReadyTimeout+"\n") {
				t.Errorf("kube-apiserver's %s keeps its 2 s default:\n%s", flag, m)
			}
		}
		if c == "kube-apiserver" && !strings.Contains(string(m), "--etcd-servers=https://172.31.3.11:2379\n") {
			t.Errorf("kube-apiserver etcd servers:\n%s", m)
		}
	}
}

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
	stackedIn.EtcdEndpoints, stackedIn.ProxyMode, stackedIn.GatePods = nil, "iptables", true
	stacked, _ := RenderInit(stackedIn)
	join, err := RenderJoin(JoinInput{Node: Node{Name: "kube-node3", IP: "172.31.4.11"}, APIServer: "172.31.3.11:6443",
		Token: "abcdef.0123456789abcdef", CACertHash: "sha256:" + strings.Repeat("ab", 32), Wait: referenceInit().Wait, GatePods: true})
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

// TestE2EKubeadmRunsInitInTwoParts runs the bundle's real kubeadm with
// both InitCommands in dry-run, inside a private mount and network
// namespace whose /etc/kubernetes, /var/lib/kubelet and /etc/k8slab are
// empty tmpfs: kubeadm must accept the skip lists (it rejects unknown
// phases and unmet phase dependencies), the first must write only
// kube-apiserver's manifest and the second the other two.
func TestE2EKubeadmRunsInitInTwoParts(t *testing.T) {
	bundle := os.Getenv("K8SLAB_BUNDLE")
	if bundle == "" || (os.Getenv("K8SLAB_E2E") == "" && os.Getenv("K8SLAB_E2E_INSTALL") == "") {
		t.Skip("needs the offline bundle's kubeadm: run with make e2e")
	}
	dir := t.TempDir()
	cfg, err := RenderInit(referenceInit())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "init.yaml")
	os.WriteFile(path, cfg, 0o600)
	first, rest := InitCommands(path)
	kubeadm := filepath.Join(bundle, "bin", "kubeadm")
	dry := filepath.Join(dir, "dryrun")
	script := fmt.Sprintf(`set -e
mount --make-rprivate /
for d in /etc/kubernetes /var/lib/kubelet /etc/k8slab; do mkdir -p $d; mount -t tmpfs tmpfs $d; done
mkdir -p %[1]s
export KUBEADM_INIT_DRYRUN_DIR=%[2]s PATH=%[3]s:$PATH
%[4]s --dry-run --ignore-preflight-errors=all
ls %[2]s > %[2]s.first
%[5]s --dry-run
ls %[2]s > %[2]s.rest
`, PatchesDir, dry, filepath.Dir(kubeadm), first, rest)
	out, err := exec.Command("unshare", "--mount", "--net", "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, tt := range []struct {
		after      string
		want, none []string
	}{
		{".first", []string{"kube-apiserver.yaml", "admin.conf", "config.yaml"}, []string{"kube-controller-manager.yaml", "kube-scheduler.yaml"}},
		{".rest", []string{"kube-apiserver.yaml", "kube-controller-manager.yaml", "kube-scheduler.yaml"}, nil},
	} {
		b, _ := os.ReadFile(dry + tt.after)
		files := strings.Fields(string(b))
		for _, f := range tt.want {
			if !slices.Contains(files, f) {
				t.Errorf("after the %s command: no %s in %v", tt.after[1:], f, files)
			}
		}
		for _, f := range tt.none {
			if slices.Contains(files, f) {
				t.Errorf("after the %s command: %s was written already", tt.after[1:], f)
			}
		}
	}
}

// probeBlock is a manifest's probe: the lines indented below its key.
func probeBlock(manifest, key string) (string, bool) {
	i := strings.Index(manifest, key)
	if i < 0 {
		return "", false
	}
	var block []string
	for _, l := range strings.Split(manifest[i:], "\n")[1:] {
		if !strings.HasPrefix(l, "      ") {
			break
		}
		block = append(block, l)
	}
	return strings.Join(block, "\n") + "\n", true
}
