// Package bootstrap turns prepared nodes into a cluster: etcd, the control
// plane (kubeadm init), joins, and the admin kubeconfig.
package bootstrap

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"regexp"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// The kubeadm v1beta4 API, reduced to the fields k8slab sets. Typed
// structs (not templates) keep every value quoted and every field checked
// by the compiler; kubeadm itself validates the result in the e2e.

const (
	kubeadmAPI   = "kubeadm.k8s.io/v1beta4"
	kubeletAPI   = "kubelet.config.k8s.io/v1beta1"
	kubeProxyAPI = "kubeproxy.config.k8s.io/v1alpha1"
	// CRISocket is containerd's socket, as k8slab configures it.
	CRISocket = "unix:///run/containerd/containerd.sock"
	// APIServerPort is where kube-apiserver listens.
	APIServerPort = 6443
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// Arg is a v1beta4 extra argument (a list of name/value, not a map).
type Arg struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// NodeRegistration says how a node registers itself.
type NodeRegistration struct {
	Name             string   `json:"name"`
	CRISocket        string   `json:"criSocket"`
	KubeletExtraArgs []Arg    `json:"kubeletExtraArgs,omitempty"`
	Taints           []Taint  `json:"taints"`
	IgnorePreflight  []string `json:"ignorePreflightErrors,omitempty"`
}

// Taint is a node taint; an empty list means none, not kubeadm's default.
type Taint struct {
	Key    string `json:"key"`
	Effect string `json:"effect"`
}

// PodNetworkTaint keeps pods that need the pod network (CoreDNS,
// calico-kube-controllers; calico-node and kube-proxy tolerate every
// taint) off a node until calico-node there says its network is up; the
// install's rollout lifts it then. The kubelet marks a node Ready as soon
// as Calico's install-cni has written the CNI configuration, before
// calico-node has started: a pod scheduled in that gap failed its sandbox
// ("stat /var/lib/calico/nodename") and waited out the kubelet's 10-15 s
// back-off, in most container-lab installs. It is Kubernetes' own
// network-unavailable taint made explicit: that one follows the node's
// NetworkUnavailable condition, which only a cloud provider sets at
// registration.
var PodNetworkTaint = Taint{Key: "k8slab.dev/pod-network-unavailable", Effect: "NoSchedule"}

// Timeouts are v1beta4's waits; they belong to Init/JoinConfiguration.
type Timeouts struct {
	ControlPlaneComponentHealthCheck string `json:"controlPlaneComponentHealthCheck,omitempty"`
	KubeletHealthCheck               string `json:"kubeletHealthCheck,omitempty"`
	KubernetesAPICall                string `json:"kubernetesAPICall,omitempty"`
	Discovery                        string `json:"discovery,omitempty"`
	TLSBootstrap                     string `json:"tlsBootstrap,omitempty"`
}

// BootstrapToken lets workers join.
type BootstrapToken struct {
	Token  string   `json:"token"`
	TTL    string   `json:"ttl"`
	Usages []string `json:"usages"`
	Groups []string `json:"groups"`
}

// InitConfiguration is the control plane node's part of kubeadm init.
type InitConfiguration struct {
	typeMeta         `json:",inline"`
	BootstrapTokens  []BootstrapToken `json:"bootstrapTokens"`
	LocalAPIEndpoint struct {
		AdvertiseAddress string `json:"advertiseAddress"`
		BindPort         int    `json:"bindPort"`
	} `json:"localAPIEndpoint"`
	NodeRegistration NodeRegistration `json:"nodeRegistration"`
	Timeouts         Timeouts         `json:"timeouts"`
	Patches          *Patches         `json:"patches,omitempty"`
}

// Patches points kubeadm at a directory of patches for its static pods.
type Patches struct {
	Directory string `json:"directory"`
}

// PatchesDir holds ProbePatches on the control plane.
const PatchesDir = "/etc/k8slab/kubeadm-patches"

// ProbePatches are kubeadm patches (file name → strategic merge patch)
// that give the control-plane containers' startup and liveness probes 30 s
// to answer and 60 misses (10 min) before the kubelet restarts them
// (kubeadm: 15 s, 24 and 8). Restarting a starved component never made it
// faster: on emulated nodes a healthy kube-controller-manager missed its
// probes and each restart stopped CSR approval while workers joined, and
// a kube-apiserver killed by its liveness probe while a worker joined
// (12 misses) came back into a crash loop — its clients' reconnects
// overran the new process until its post-start hooks timed out.
//
// kube-apiserver's liveness and startup probes also leave out /livez's
// etcd check, which fails whenever etcd answers slower than 2 s
// (--etcd-healthcheck-timeout): on the emulated lab the kubelet killed an API
// server that was still serving the joins, 22-23 min after it started,
// while etcd took 7-37 s per request; the restarted one then crash-looped
// on its post-start hooks. A restart cannot make etcd (k8slab's systemd
// service) faster; /readyz keeps the etcd check, so a slow etcd still
// marks the API server not ready without killing it.
//
// The readiness probes kubeadm gives kube-apiserver and kube-scheduler ask
// every second, with a fresh TLS handshake each time, and mark the
// component not ready after three misses of 15 s. On one run's loaded
// control plane (guest load ~25, CPU pressure 91 %) an idle kube-scheduler
// spent a quarter of a CPU answering them and a /readyz that passed took
// 15.6 s: both stayed "not ready" for minutes while they served, and
// verify reported it. Every 10 s with 30 s to answer still reports a
// component that stops answering within about a minute and a half; no
// traffic depends on these pods' readiness (the kubernetes Service's
// endpoints come from the API server itself).
func ProbePatches() map[string]string {
	out := map[string]string{}
	for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		path, ready := "", ""
		if c == "kube-apiserver" {
			path = "      httpGet:\n        path: " + APIServerLivePath + "\n"
		}
		if c != "kube-controller-manager" { // kubeadm gives it no readiness probe
			ready = "    readinessProbe:\n      periodSeconds: " + ReadinessPeriod + "\n      timeoutSeconds: 30\n      failureThreshold: 3\n"
		}
		out[c+"+strategic.yaml"] = "spec:\n  containers:\n  - name: " + c + "\n" +
			"    startupProbe:\n      timeoutSeconds: 30\n      failureThreshold: 60\n" + path +
			"    livenessProbe:\n      timeoutSeconds: 30\n      failureThreshold: 60\n" + path + ready
	}
	return out
}

// ReadinessPeriod is how often (seconds) the kubelet asks kube-apiserver
// and kube-scheduler whether they are ready (kubeadm: 1).
const ReadinessPeriod = "10"

// APIServerEtcdReadyTimeout is how long /readyz's two etcd checks wait
// (kube-apiserver's defaults: 2 s each). With only the liveness probes eased, an API server
// that served every request was reported not ready for minutes
// because etcd's linearizable reads took 1-2 s on loaded emulated nodes;
// the readiness probe itself allows 15 s, and verify checks etcd's health
// on its own, so a slow etcd is still reported, as slow rather than absent.
// /readyz has both "etcd-readiness" (--etcd-readycheck-timeout) and "etcd"
// (--etcd-healthcheck-timeout): with only the first raised, one run's API
// server failed /readyz on "etcd" 1402 times in its first minutes, and a
// re-run that changed nothing waited 36 s for it.
const APIServerEtcdReadyTimeout = "10s"

// APIServerLivePath is what the kubelet asks kube-apiserver to decide
// whether to restart it: /livez without its etcd check.
const APIServerLivePath = "/livez?exclude=etcd"

// ClusterConfiguration is the cluster-wide part of kubeadm init.
type ClusterConfiguration struct {
	typeMeta             `json:",inline"`
	ClusterName          string `json:"clusterName"`
	KubernetesVersion    string `json:"kubernetesVersion"`
	EncryptionAlgorithm  string `json:"encryptionAlgorithm"`
	ControlPlaneEndpoint string `json:"controlPlaneEndpoint"`
	Networking           struct {
		ServiceSubnet string `json:"serviceSubnet"`
		PodSubnet     string `json:"podSubnet"`
		DNSDomain     string `json:"dnsDomain"`
	} `json:"networking"`
	APIServer struct {
		CertSANs  []string `json:"certSANs"`
		ExtraArgs []Arg    `json:"extraArgs,omitempty"`
	} `json:"apiServer"`
	ControllerManager Component `json:"controllerManager"`
	Scheduler         Component `json:"scheduler"`
	Etcd              Etcd      `json:"etcd"`
}

// Component carries a control-plane component's extra flags.
type Component struct {
	ExtraArgs []Arg `json:"extraArgs,omitempty"`
}

// Etcd is either kubeadm's stacked etcd or k8slab's external cluster.
type Etcd struct {
	Local    *struct{}     `json:"local,omitempty"`
	External *ExternalEtcd `json:"external,omitempty"`
}

// ExternalEtcd points the API server at k8slab's etcd members.
type ExternalEtcd struct {
	Endpoints []string `json:"endpoints"`
	CAFile    string   `json:"caFile"`
	CertFile  string   `json:"certFile"`
	KeyFile   string   `json:"keyFile"`
}

// KubeletConfiguration: the cgroup driver must match containerd's
// SystemdCgroup = true; kubeadm only warns about a mismatch.
type KubeletConfiguration struct {
	typeMeta              `json:",inline"`
	CgroupDriver          string `json:"cgroupDriver"`
	RuntimeRequestTimeout string `json:"runtimeRequestTimeout"`
	// FailCgroupV1 false lets the kubelet start on cgroup v1 (Ubuntu
	// 20.04, hosts booted with the legacy hierarchy), which it refuses by
	// default since v1.35.
	FailCgroupV1 *bool `json:"failCgroupV1,omitempty"`
}

// RuntimeRequestTimeout bounds the kubelet's calls to containerd; a pod
// sandbox gets twice as long. At the default 2 m (4 m for a sandbox) the
// loaded control-plane VM never started kube-proxy's and calico-node's
// sandboxes: each attempt was cancelled while containerd
// was still starting the shim, and the next began from scratch. A call
// that finishes late costs nothing; a hung runtime is noticed later.
const RuntimeRequestTimeout = "10m0s"

// KubeProxyConfiguration picks the proxy mode.
type KubeProxyConfiguration struct {
	typeMeta `json:",inline"`
	Mode     string `json:"mode"`
}

// JoinConfiguration is a worker's kubeadm join.
type JoinConfiguration struct {
	typeMeta  `json:",inline"`
	Discovery struct {
		BootstrapToken struct {
			APIServerEndpoint string   `json:"apiServerEndpoint"`
			Token             string   `json:"token"`
			CACertHashes      []string `json:"caCertHashes"`
		} `json:"bootstrapToken"`
	} `json:"discovery"`
	NodeRegistration NodeRegistration `json:"nodeRegistration"`
	Timeouts         Timeouts         `json:"timeouts"`
}

// Node is one machine as the renderers need it.
type Node struct {
	Name string // hostname: the Kubernetes node name
	IP   string // node-ip: its address on the route to the control plane
	// Labels the kubelet registers the node with (--node-labels): the
	// node carries them from its first moment, before kube-proxy starts.
	Labels map[string]string
}

// InitInput is everything kubeadm init's configuration depends on.
type InitInput struct {
	ClusterName       string
	KubernetesVersion string
	ControlPlane      Node
	ServiceCIDR       string
	PodCIDR           string
	// ExtraSANs are further names and addresses of the control plane.
	ExtraSANs []string
	// EtcdEndpoints empty means stacked etcd.
	EtcdEndpoints []string
	Token         string
	// ControlPlaneIsWorker drops the control-plane NoSchedule taint.
	ControlPlaneIsWorker bool
	// ProxyMode is nftables or iptables.
	ProxyMode string
	// Wait bounds kubeadm's own waits; the emulated lab needs minutes.
	Wait            time.Duration
	IgnorePreflight []string
	// CgroupV1: some node runs cgroup v1. The kubelet configuration is the
	// cluster's (joins download it), so it allows v1 everywhere.
	CgroupV1 bool
	// GatePods registers the node with PodNetworkTaint.
	GatePods bool
}

// CgroupV1Preflight is the kubeadm check that fails on cgroup v1 (it
// checks nothing else k8slab's own preflight does not).
const CgroupV1Preflight = "SystemVerification"

// External etcd client files, where k8slab's etcd phase puts them.
const (
	EtcdCAFile         = "/etc/kubernetes/pki/etcd/ca.crt"
	EtcdClientCertFile = "/etc/kubernetes/pki/apiserver-etcd-client.crt"
	EtcdClientKeyFile  = "/etc/kubernetes/pki/apiserver-etcd-client.key"
)

// timeouts: kubeadm also polls a just-started API server for as long as
// kubernetesAPICall allows (bootstrapping the admin user); on emulated VMs
// that took minutes, so every wait gets the run's long limit.
func timeouts(wait time.Duration) Timeouts {
	d := wait.String()
	return Timeouts{ControlPlaneComponentHealthCheck: d, KubeletHealthCheck: d, KubernetesAPICall: d, Discovery: d, TLSBootstrap: d}
}

func nodeRegistration(n Node, worker, gatePods bool, ignore []string) NodeRegistration {
	nr := NodeRegistration{
		Name: n.Name, CRISocket: CRISocket,
		KubeletExtraArgs: []Arg{{Name: "node-ip", Value: n.IP}},
		Taints:           []Taint{},
		IgnorePreflight:  ignore,
	}
	if len(n.Labels) > 0 {
		var kv []string
		for k, v := range n.Labels {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		nr.KubeletExtraArgs = append(nr.KubeletExtraArgs, Arg{Name: "node-labels", Value: strings.Join(kv, ",")})
	}
	if !worker {
		nr.Taints = append(nr.Taints, Taint{Key: "node-role.kubernetes.io/control-plane", Effect: "NoSchedule"})
	}
	if gatePods {
		nr.Taints = append(nr.Taints, PodNetworkTaint)
	}
	return nr
}

// RenderInit returns the multi-document config for `kubeadm init --config`.
func RenderInit(in InitInput) ([]byte, error) {
	if !tokenRE.MatchString(in.Token) {
		return nil, fmt.Errorf("bootstrap token %q is not of the form [a-z0-9]{6}.[a-z0-9]{16}", in.Token)
	}
	endpoint := fmt.Sprintf("%s:%d", in.ControlPlane.IP, APIServerPort)
	initCfg := InitConfiguration{
		typeMeta: typeMeta{kubeadmAPI, "InitConfiguration"},
		BootstrapTokens: []BootstrapToken{{
			Token: in.Token, TTL: "2h0m0s", Usages: []string{"signing", "authentication"},
			Groups: []string{"system:bootstrappers:kubeadm:default-node-token"},
		}},
		NodeRegistration: nodeRegistration(in.ControlPlane, in.ControlPlaneIsWorker, in.GatePods, in.IgnorePreflight),
		Timeouts:         timeouts(in.Wait),
		Patches:          &Patches{Directory: PatchesDir},
	}
	initCfg.LocalAPIEndpoint.AdvertiseAddress = in.ControlPlane.IP
	initCfg.LocalAPIEndpoint.BindPort = APIServerPort

	cc := ClusterConfiguration{
		typeMeta:          typeMeta{kubeadmAPI, "ClusterConfiguration"},
		ClusterName:       in.ClusterName,
		KubernetesVersion: in.KubernetesVersion,
		// P-256 keys for every certificate and the service-account signer:
		// a TLS handshake or token signature costs a fraction of RSA-2048's,
		// which is what an emulated control plane spends its CPU on while
		// every component and kubelet connects at once.
		EncryptionAlgorithm:  "ECDSA-P256",
		ControlPlaneEndpoint: endpoint,
	}
	cc.Networking.ServiceSubnet, cc.Networking.PodSubnet, cc.Networking.DNSDomain = in.ServiceCIDR, in.PodCIDR, "cluster.local"
	cc.APIServer.CertSANs = dedupe(append([]string{in.ControlPlane.IP, in.ControlPlane.Name}, in.ExtraSANs...))
	cc.APIServer.ExtraArgs = []Arg{
		{Name: "etcd-readycheck-timeout", Value: APIServerEtcdReadyTimeout},
		{Name: "etcd-healthcheck-timeout", Value: APIServerEtcdReadyTimeout},
	}
	// One control plane: leader election only adds a lease the components
	// must renew within 10 s. On emulated VMs the API server answered
	// slower than that, and kube-controller-manager kept exiting on "lost
	// lease" (its CSR approver with it, so joins hung).
	noElection := []Arg{{Name: "leader-elect", Value: "false"}}
	cc.ControllerManager.ExtraArgs, cc.Scheduler.ExtraArgs = noElection, noElection
	if len(in.EtcdEndpoints) == 0 {
		cc.Etcd.Local = &struct{}{}
	} else {
		cc.Etcd.External = &ExternalEtcd{Endpoints: in.EtcdEndpoints, CAFile: EtcdCAFile, CertFile: EtcdClientCertFile, KeyFile: EtcdClientKeyFile}
	}
	mode := in.ProxyMode
	if mode == "" {
		mode = "iptables"
	}
	kc := KubeletConfiguration{typeMeta: typeMeta{kubeletAPI, "KubeletConfiguration"}, CgroupDriver: "systemd", RuntimeRequestTimeout: RuntimeRequestTimeout}
	if in.CgroupV1 {
		kc.FailCgroupV1 = new(bool)
	}
	return marshalDocs(initCfg, cc, kc,
		KubeProxyConfiguration{typeMeta{kubeProxyAPI, "KubeProxyConfiguration"}, mode})
}

// JoinInput is everything a worker's join configuration depends on.
type JoinInput struct {
	Node            Node
	APIServer       string // host:port
	Token           string
	CACertHash      string // sha256:<hex>
	Wait            time.Duration
	IgnorePreflight []string
	// GatePods registers the node with PodNetworkTaint.
	GatePods bool
}

// RenderJoin returns the config for `kubeadm join --config`.
func RenderJoin(in JoinInput) ([]byte, error) {
	if !tokenRE.MatchString(in.Token) {
		return nil, fmt.Errorf("bootstrap token %q is malformed", in.Token)
	}
	if !caHashRE.MatchString(in.CACertHash) {
		return nil, fmt.Errorf("CA cert hash %q is not sha256:<64 hex>", in.CACertHash)
	}
	j := JoinConfiguration{
		typeMeta:         typeMeta{kubeadmAPI, "JoinConfiguration"},
		NodeRegistration: nodeRegistration(in.Node, true, in.GatePods, in.IgnorePreflight),
		Timeouts:         timeouts(in.Wait),
	}
	j.Discovery.BootstrapToken.APIServerEndpoint = in.APIServer
	j.Discovery.BootstrapToken.Token = in.Token
	j.Discovery.BootstrapToken.CACertHashes = []string{in.CACertHash}
	return marshalDocs(j)
}

func marshalDocs(objs ...any) ([]byte, error) {
	var b bytes.Buffer
	for i, o := range objs {
		y, err := yaml.Marshal(o)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

var (
	tokenRE  = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	caHashRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// NewToken makes a bootstrap token in kubeadm's format.
func NewToken() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 22)
	for i := range b {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", err
		}
		b[i] = alphabet[n.Int64()]
	}
	return string(b[:6]) + "." + string(b[6:]), nil
}

// CACertHash computes the discovery hash of a CA certificate (PEM) as
// kubeadm does: sha256 over the certificate's SubjectPublicKeyInfo.
func CACertHash(caPEM []byte) (string, error) {
	blk, _ := pem.Decode(caPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return "", fmt.Errorf("CA certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("CA certificate: %w", err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// InitCommands runs kubeadm init in two parts: the first starts
// kube-apiserver alone; the caller waits for its /readyz and then runs the
// second, which adds kube-controller-manager and kube-scheduler and does
// everything that needs the API. Started together with a cold
// kube-apiserver on an emulated node, those two opened connections faster
// than it finished TLS handshakes; every client that timed out dialled
// again, until the API server's own loopback handshakes in its post-start
// hooks timed out and it exited (seen: 61 + 18 client connections, ~700
// left in CLOSE-WAIT, 7 restarts, init 14 min). Started after /readyz, every
// control-plane container came up at its first attempt (3.8 min).
func InitCommands(configPath string) (apiServer, rest string) {
	// Between them the two run each of kubeadm v1.37's init phases once.
	first := []string{"control-plane/controller-manager", "control-plane/scheduler", "wait-control-plane",
		"upload-config", "upload-certs", "mark-control-plane", "bootstrap-token", "kubelet-finalize", "addon",
		"show-join-command"}
	second := []string{"preflight", "certs", "kubeconfig", "etcd", "control-plane/apiserver", "kubelet-start"}
	cmd := "kubeadm init --config " + configPath + " --skip-phases="
	return cmd + strings.Join(first, ","), cmd + strings.Join(second, ",")
}
