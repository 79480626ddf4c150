package bootstrap

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func referenceInit() InitInput {
	return InitInput{
		ClusterName: "k8slab", KubernetesVersion: "v1.37.2",
		ControlPlane: Node{Name: "kube-node1", IP: "172.31.3.11"},
		ServiceCIDR:  "172.31.64.0/18", PodCIDR: "172.31.128.0/18",
		EtcdEndpoints: []string{"https://172.31.3.11:2379", "https://172.31.3.12:2379", "https://172.31.4.11:2379"},
		Token:         "abcdef.0123456789abcdef", ControlPlaneIsWorker: true, ProxyMode: "nftables", Wait: 10 * time.Minute,
		ExtraSANs: []string{"172.31.3.11", "k8s.lab"},
	}
}

func splitDocs(t *testing.T, b []byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, d := range strings.Split(string(b), "\n---\n") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatal(err)
		}
		out[m["kind"].(string)] = m
	}
	return out
}

func get(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		cur = cur.(map[string]any)[k]
	}
	return cur
}

func TestRenderInit(t *testing.T) {
	tests := []struct {
		name   string
		change func(*InitInput)
		check  func(t *testing.T, d map[string]map[string]any)
	}{
		{"registered with its rack's zone label", func(in *InitInput) {
			in.ControlPlane.Labels = map[string]string{"topology.kubernetes.io/zone": "leaf1"}
		}, func(t *testing.T, d map[string]map[string]any) {
			args, _ := json.Marshal(get(d["InitConfiguration"], "nodeRegistration", "kubeletExtraArgs"))
			if !strings.Contains(string(args), `{"name":"node-labels","value":"topology.kubernetes.io/zone=leaf1"}`) {
				t.Errorf("kubeletExtraArgs %s", args)
			}
		}},
		{"external etcd, control plane also a worker", func(*InitInput) {}, func(t *testing.T, d map[string]map[string]any) {
			cc := d["ClusterConfiguration"]
			if get(cc, "networking", "serviceSubnet") != "172.31.64.0/18" || get(cc, "networking", "podSubnet") != "172.31.128.0/18" {
				t.Errorf("networking: %v", cc["networking"])
			}
			ext := get(cc, "etcd", "external").(map[string]any)
			if len(ext["endpoints"].([]any)) != 3 || ext["certFile"] != EtcdClientCertFile {
				t.Errorf("external etcd: %v", ext)
			}
			if sans := get(cc, "apiServer", "certSANs").([]any); len(sans) != 3 || sans[1] != "kube-node1" {
				t.Errorf("certSANs (deduplicated, with hostname): %v", sans)
			}
			if taints := get(d["InitConfiguration"], "nodeRegistration", "taints").([]any); len(taints) != 0 {
				t.Errorf("a worker control plane keeps no taint: %v", taints)
			}
			args := get(d["InitConfiguration"], "nodeRegistration", "kubeletExtraArgs").([]any)
			if a := args[0].(map[string]any); a["name"] != "node-ip" || a["value"] != "172.31.3.11" {
				t.Errorf("node-ip: %v", args)
			}
			for _, comp := range []string{"controllerManager", "scheduler"} {
				args, _ := json.Marshal(get(d["ClusterConfiguration"], comp, "extraArgs"))
				if string(args) != `[{"name":"leader-elect","value":"false"}]` {
					t.Errorf("%s extraArgs: %s", comp, args)
				}
			}
			// Both of /readyz's etcd checks: either one at its 2 s
			// default keeps a serving API server not ready.
			if args, _ := json.Marshal(get(cc, "apiServer", "extraArgs")); string(args) != `[{"name":"etcd-readycheck-timeout","value":"10s"},{"name":"etcd-healthcheck-timeout","value":"10s"}]` {
				t.Errorf("apiServer extraArgs: %s", args)
			}
			if cc["encryptionAlgorithm"] != "ECDSA-P256" {
				t.Errorf("encryptionAlgorithm: %v", cc["encryptionAlgorithm"])
			}
			if _, set := d["KubeletConfiguration"]["failCgroupV1"]; set {
				t.Errorf("failCgroupV1 set on a cgroup v2 cluster: %v", d["KubeletConfiguration"])
			}
			if d["KubeletConfiguration"]["cgroupDriver"] != "systemd" || d["KubeletConfiguration"]["runtimeRequestTimeout"] != "10m0s" || d["KubeProxyConfiguration"]["mode"] != "nftables" {
				t.Errorf("kubelet/proxy: %v %v", d["KubeletConfiguration"], d["KubeProxyConfiguration"])
			}
			if get(d["InitConfiguration"], "timeouts", "controlPlaneComponentHealthCheck") != "10m0s" || get(d["InitConfiguration"], "timeouts", "kubernetesAPICall") != "10m0s" {
				t.Errorf("timeouts belong to InitConfiguration in v1beta4: %v", d["InitConfiguration"]["timeouts"])
			}
		}},
		{"stacked etcd, dedicated control plane, iptables", func(in *InitInput) {
			in.EtcdEndpoints, in.ControlPlaneIsWorker, in.ProxyMode = nil, false, "iptables"
		}, func(t *testing.T, d map[string]map[string]any) {
			if _, ok := get(d["ClusterConfiguration"], "etcd").(map[string]any)["local"]; !ok {
				t.Errorf("want local etcd: %v", d["ClusterConfiguration"]["etcd"])
			}
			if taints := get(d["InitConfiguration"], "nodeRegistration", "taints").([]any); len(taints) != 1 {
				t.Errorf("control plane taint: %v", taints)
			}
			if d["KubeProxyConfiguration"]["mode"] != "iptables" {
				t.Errorf("proxy mode: %v", d["KubeProxyConfiguration"])
			}
		}},
		{"pods gated on the pod network, dedicated control plane", func(in *InitInput) {
			in.GatePods, in.ControlPlaneIsWorker = true, false
		}, func(t *testing.T, d map[string]map[string]any) {
			taints, _ := json.Marshal(get(d["InitConfiguration"], "nodeRegistration", "taints"))
			if string(taints) != `[{"effect":"NoSchedule","key":"node-role.kubernetes.io/control-plane"},{"effect":"NoSchedule","key":"k8slab.dev/pod-network-unavailable"}]` {
				t.Errorf("taints: %s", taints)
			}
		}},
		{"cgroup v1: the kubelet allows it, kubeadm skips the check that refuses it", func(in *InitInput) {
			in.CgroupV1, in.IgnorePreflight = true, []string{CgroupV1Preflight}
		}, func(t *testing.T, d map[string]map[string]any) {
			if v, set := d["KubeletConfiguration"]["failCgroupV1"]; !set || v != false {
				t.Errorf("failCgroupV1: %v (set %v), want false", v, set)
			}
			if ig, _ := json.Marshal(get(d["InitConfiguration"], "nodeRegistration", "ignorePreflightErrors")); string(ig) != `["SystemVerification"]` {
				t.Errorf("ignorePreflightErrors: %s", ig)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := referenceInit()
			tt.change(&in)
			b, err := RenderInit(in)
			if err != nil {
				t.Fatal(err)
			}
			d := splitDocs(t, b)
			if len(d) != 4 {
				t.Fatalf("want 4 documents, got %d", len(d))
			}
			tt.check(t, d)
		})
	}
	bad := referenceInit()
	bad.Token = "not-a-token"
	if _, err := RenderInit(bad); err == nil {
		t.Error("malformed token accepted")
	}
}

func TestRenderJoinGatesPodsOnlyWhenAsked(t *testing.T) {
	for _, gate := range []bool{false, true} {
		b, err := RenderJoin(JoinInput{Node: Node{Name: "kube-node3", IP: "172.31.4.11"}, APIServer: "172.31.3.11:6443",
			Token: "abcdef.0123456789abcdef", CACertHash: "sha256:" + strings.Repeat("ab", 32), GatePods: gate})
		if err != nil {
			t.Fatal(err)
		}
		taints, _ := json.Marshal(get(splitDocs(t, b)["JoinConfiguration"], "nodeRegistration", "taints"))
		want := `[]`
		if gate {
			want = `[{"effect":"NoSchedule","key":"k8slab.dev/pod-network-unavailable"}]`
		}
		if string(taints) != want {
			t.Errorf("GatePods %v: taints %s, want %s", gate, taints, want)
		}
	}
}

func TestNewTokenFormat(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		tok, err := NewToken()
		if err != nil || !tokenRE.MatchString(tok) || seen[tok] {
			t.Fatalf("token %q %v", tok, err)
		}
		seen[tok] = true
	}
}

// TestCACertHashMatchesOpenSSL computes the hash the way kubeadm's docs do
// with openssl, independently of our code.
func TestCACertHashMatchesOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is installed by scripts/install-test-deps.sh")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	got, err := CACertHash(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "ca.crt")
	os.WriteFile(f, caPEM, 0o644)
	out, err := exec.Command("sh", "-c", "openssl x509 -pubkey -in "+f+" | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex | sed 's/^.* //'").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "sha256:" + strings.TrimSpace(string(out)); got != want {
		t.Errorf("hash %s, openssl says %s", got, want)
	}
	if _, err := CACertHash([]byte("garbage")); err == nil {
		t.Error("garbage accepted")
	}
}

func TestInitCommandsSplitAtTheAPIServer(t *testing.T) {
	first, rest := InitCommands("/etc/k8slab/kubeadm-init.yaml")
	skips := func(cmd string) map[string]bool {
		const prefix = "kubeadm init --config /etc/k8slab/kubeadm-init.yaml --skip-phases="
		if !strings.HasPrefix(cmd, prefix) {
			t.Fatalf("command %q", cmd)
		}
		out := map[string]bool{}
		for _, p := range strings.Split(strings.TrimPrefix(cmd, prefix), ",") {
			out[p] = true
		}
		return out
	}
	a, b := skips(first), skips(rest)
	// kubeadm v1.37's init phases and control-plane's sub-phases: each
	// runs in exactly one of the two commands.
	for _, p := range []string{"preflight", "certs", "kubeconfig", "etcd", "control-plane/apiserver",
		"control-plane/controller-manager", "control-plane/scheduler", "kubelet-start", "wait-control-plane",
		"upload-config", "upload-certs", "mark-control-plane", "bootstrap-token", "kubelet-finalize", "addon", "show-join-command"} {
		if a[p] == b[p] {
			t.Errorf("phase %s: skipped by the first command %v, by the second %v; want exactly one to run it", p, a[p], b[p])
		}
	}
	for _, p := range []string{"control-plane/controller-manager", "control-plane/scheduler", "wait-control-plane"} {
		if !a[p] {
			t.Errorf("the first command runs %s: it must start the API server alone and not wait for the others", p)
		}
	}
}

// TestProbePatchesSparesEtcd: only the API server's liveness and startup
// probes change path, both to /livez without etcd; readiness is asked
// every 10 s where kubeadm has a readiness probe; every patch is YAML.
func TestProbePatchesSparesEtcd(t *testing.T) {
	type probe struct {
		TimeoutSeconds   int `json:"timeoutSeconds"`
		FailureThreshold int `json:"failureThreshold"`
		HTTPGet          *struct {
			Path string `json:"path"`
		} `json:"httpGet"`
	}
	for name, p := range ProbePatches() {
		var doc struct {
			Spec struct {
				Containers []struct {
					Name           string `json:"name"`
					LivenessProbe  probe  `json:"livenessProbe"`
					StartupProbe   probe  `json:"startupProbe"`
					ReadinessProbe *struct {
						PeriodSeconds    int `json:"periodSeconds"`
						TimeoutSeconds   int `json:"timeoutSeconds"`
						FailureThreshold int `json:"failureThreshold"`
					} `json:"readinessProbe"`
				} `json:"containers"`
			} `json:"spec"`
		}
		if err := yaml.UnmarshalStrict([]byte(p), &doc); err != nil || len(doc.Spec.Containers) != 1 {
			t.Fatalf("%s: %v\n%s", name, err, p)
		}
		c := doc.Spec.Containers[0]
		// A readiness patch on a container without a probe would add a
		// probe with no handler: kube-controller-manager has none.
		r := c.ReadinessProbe
		switch {
		case c.Name == "kube-controller-manager" && r != nil:
			t.Errorf("%s: readiness patched, but kubeadm gives it no readiness probe", c.Name)
		case c.Name != "kube-controller-manager" && (r == nil || r.PeriodSeconds != 10 || r.TimeoutSeconds != 30 || r.FailureThreshold != 3):
			t.Errorf("%s readiness probe: %+v; want every 10 s, 30 s to answer, 3 misses", c.Name, r)
		}
		for which, pr := range map[string]probe{"liveness": c.LivenessProbe, "startup": c.StartupProbe} {
			path := ""
			if pr.HTTPGet != nil {
				path = pr.HTTPGet.Path
			}
			want := map[bool]string{true: APIServerLivePath}[c.Name == "kube-apiserver"]
			if path != want || pr.FailureThreshold != 60 || pr.TimeoutSeconds != 30 {
				t.Errorf("%s %s probe: path %q, %+v; want path %q, 60 misses of 30 s", c.Name, which, path, pr, want)
			}
		}
	}
}
