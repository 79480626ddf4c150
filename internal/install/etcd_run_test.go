package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
)

// etcdNode is a recording fake node whose systemd runs a real etcd: the
// etcd phase's "start etcd" starts an embedded etcd server configured
// from the environment file and certificates the phase uploaded to this
// node, listening on the node's loopback address. File checks are
// answered from what was uploaded, and connections "through the node"
// are plain loopback connections. So the phase's PKI, environment file,
// health check and leader move meet a real etcd; only SSH and systemd
// are stood in for.
type etcdNode struct {
	*hosttest.Fake
	t    *testing.T
	root string // the node's files, for etcd to read

	mu      sync.Mutex
	modes   map[string]os.FileMode
	etcd    *embed.Etcd
	dials   []string
	unready bool // etcd "starts" but never runs (a member that is down)
	unread  bool // reading files fails (a node that does not answer)
}

func newEtcdNode(t *testing.T, name string) *etcdNode {
	noDNS(t)
	n := &etcdNode{Fake: &hosttest.Fake{Label: name}, t: t, root: t.TempDir(), modes: map[string]os.FileMode{}}
	t.Cleanup(n.stop)
	return n
}

func (n *etcdNode) Upload(ctx context.Context, f host.File, r io.Reader) error {
	n.mu.Lock()
	n.modes[f.Path] = f.Mode
	n.mu.Unlock()
	return n.Fake.Upload(ctx, f, r)
}

func (n *etcdNode) ReadFile(ctx context.Context, p string) ([]byte, error) {
	if n.unread {
		n.Fake.ReadFile(ctx, p) // recorded
		return nil, errors.New("connection lost")
	}
	return n.Fake.ReadFile(ctx, p)
}

func (n *etcdNode) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	n.dials = append(n.dials, addr)
	n.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Run records the command and acts as the node would for the two kinds
// the etcd phase sends besides file writes: the file check and systemd.
func (n *etcdNode) Run(ctx context.Context, c host.Cmd) error {
	if err := n.Fake.Run(ctx, c); err != nil {
		return err
	}
	var out string
	switch {
	case strings.Contains(c.Command, "file-check.sh"):
		out = n.fileCheck()
	case strings.Contains(c.Command, "restart --no-block etcd"):
		n.stop()
		n.start()
		out = "started\n"
	case strings.Contains(c.Command, "systemctl is-active -q etcd ||"):
		n.mu.Lock()
		running := n.etcd != nil
		n.mu.Unlock()
		if !running {
			n.start()
			out = "started\n"
		}
	}
	if c.Stdout != nil {
		io.WriteString(c.Stdout, out)
	}
	return nil
}

// fileCheck is file-check.sh's answer for every file the node has.
func (n *etcdNode) fileCheck() string {
	var b strings.Builder
	n.mu.Lock()
	defer n.mu.Unlock()
	for p, mode := range n.modes {
		content := n.Files[p]
		fmt.Fprintf(&b, "file=%s %o hashed %s\n", provision.Generated(p, mode, string(content)).SHA256, mode.Perm(), p)
	}
	return b.String()
}

// start runs etcd the way etcd.service would: its configuration is the
// environment file, its certificates the files under /etc/etcd/pki.
func (n *etcdNode) start() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.unready {
		return
	}
	// start runs in the phase's goroutines: failures are Errorf (Fatal
	// must come from the test's own goroutine), and etcd then never runs.
	for p, b := range n.Files {
		dst := filepath.Join(n.root, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			n.t.Error(err)
			return
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			n.t.Error(err)
			return
		}
	}
	cfg, err := n.config(string(n.Files[bootstrap.EtcdEnvFile]))
	if err != nil {
		n.t.Errorf("%s: %s: %v", n.Label, bootstrap.EtcdEnvFile, err)
		return
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		n.t.Errorf("%s: etcd did not start: %v", n.Label, err)
		return
	}
	n.etcd = e
}

func (n *etcdNode) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.etcd != nil {
		n.etcd.Close()
		n.etcd = nil
	}
}

// config reads etcd's environment file the way etcd reads its ETCD_*
// variables. A variable this test does not know fails it: the file must
// not grow settings no test has seen etcd accept.
func (n *etcdNode) config(env string) (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.LogLevel = "error"
	// etcd checks that a peer connects from an address its certificate
	// names, and looks the certificate's DNS names up when it does not.
	// On one loopback interface every member connects from 127.0.0.1,
	// not its own address: the check is left to the VM and container
	// labs, where each member has its own interface.
	cfg.PeerTLSInfo.SkipClientSANVerify = true
	text := map[string]*string{
		"ETCD_NAME": &cfg.Name, "ETCD_INITIAL_CLUSTER": &cfg.InitialCluster,
		"ETCD_INITIAL_CLUSTER_STATE": &cfg.ClusterState, "ETCD_INITIAL_CLUSTER_TOKEN": &cfg.InitialClusterToken,
	}
	paths := map[string]*string{ // on the node: under its root here
		"ETCD_DATA_DIR":  &cfg.Dir,
		"ETCD_CERT_FILE": &cfg.ClientTLSInfo.CertFile, "ETCD_KEY_FILE": &cfg.ClientTLSInfo.KeyFile,
		"ETCD_TRUSTED_CA_FILE": &cfg.ClientTLSInfo.TrustedCAFile,
		"ETCD_PEER_CERT_FILE":  &cfg.PeerTLSInfo.CertFile, "ETCD_PEER_KEY_FILE": &cfg.PeerTLSInfo.KeyFile,
		"ETCD_PEER_TRUSTED_CA_FILE": &cfg.PeerTLSInfo.TrustedCAFile,
	}
	flags := map[string]*bool{"ETCD_CLIENT_CERT_AUTH": &cfg.ClientTLSInfo.ClientCertAuth, "ETCD_PEER_CLIENT_CERT_AUTH": &cfg.PeerTLSInfo.ClientCertAuth}
	urls := map[string]*[]url.URL{
		"ETCD_LISTEN_PEER_URLS": &cfg.ListenPeerUrls, "ETCD_LISTEN_CLIENT_URLS": &cfg.ListenClientUrls,
		"ETCD_ADVERTISE_CLIENT_URLS": &cfg.AdvertiseClientUrls, "ETCD_INITIAL_ADVERTISE_PEER_URLS": &cfg.AdvertisePeerUrls,
	}
	millis := map[string]*uint{"ETCD_HEARTBEAT_INTERVAL": &cfg.TickMs, "ETCD_ELECTION_TIMEOUT": &cfg.ElectionMs}
	durations := map[string]*time.Duration{"ETCD_WARNING_APPLY_DURATION": &cfg.WarningApplyDuration, "ETCD_WARNING_UNARY_REQUEST_DURATION": &cfg.WarningUnaryRequestDuration}
	for _, line := range strings.Split(strings.TrimSpace(env), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %q is not KEY=VALUE", line)
		}
		var err error
		switch {
		case text[k] != nil:
			*text[k] = v
		case paths[k] != nil:
			*paths[k] = filepath.Join(n.root, v)
		case flags[k] != nil:
			*flags[k], err = strconv.ParseBool(v)
		case urls[k] != nil:
			var list []url.URL
			for _, s := range strings.Split(v, ",") {
				u, perr := url.Parse(s)
				if perr != nil {
					err = perr
					break
				}
				list = append(list, *u)
			}
			*urls[k] = list
		case millis[k] != nil:
			var i uint64
			i, err = strconv.ParseUint(v, 10, 32)
			*millis[k] = uint(i)
		case durations[k] != nil:
			*durations[k], err = time.ParseDuration(v)
		default:
			return nil, fmt.Errorf("%s: a variable this test has not seen etcd take", k)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
	}
	return cfg, nil
}

// noDNS makes every DNS query of the test process fail before it leaves
// the machine (names in /etc/hosts still resolve): the members' certificates name
// their nodes, and a lookup of "kube-node1" would go to the
// workstation's resolver.
func noDNS(t *testing.T) {
	saved := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(_ context.Context, _, addr string) (net.Conn, error) {
		return nil, fmt.Errorf("DNS query to %s refused: this test sends nothing off the machine", addr)
	}}
	t.Cleanup(func() { net.DefaultResolver = saved })
}

// etcdPhase is the etcd phase of a three-member external etcd on fake
// nodes running real etcd, each on a loopback address of its own
// (127.0.0.0/8 is all local on Linux).
func etcdPhase(t *testing.T, nodes ...*etcdNode) (*Etcd, *bytes.Buffer) {
	t.Helper()
	names := make([]string, len(nodes))
	hosts := map[string]host.Host{}
	list := make([]host.Host, len(nodes))
	for i, n := range nodes {
		names[i], hosts[n.Label], list[i] = n.Label, n, n
	}
	cfg := &cluster.Config{Name: "lab", Nodes: names, Etcd: names, PodCIDR: "172.31.128.0/18", ServiceCIDR: "172.31.64.0/18"}
	cfg.Default()
	status := &bytes.Buffer{}
	r, err := run.New(run.Options{Command: "install", Status: status}, list)
	if err != nil {
		t.Fatal(err)
	}
	c := &Context{Cluster: cfg, Runner: r, Hosts: hosts, Wait: 30 * time.Second}
	for i, n := range names {
		c.setFacts(n, provision.Facts{Hostname: n}, fmt.Sprintf("127.0.0.%d", 11+i))
	}
	return &Etcd{Context: c}, status
}

func etcdNodes(t *testing.T) []*etcdNode {
	return []*etcdNode{newEtcdNode(t, "kube-node1"), newEtcdNode(t, "kube-node2"), newEtcdNode(t, "kube-node3")}
}

// leader is the name of the member the running etcd servers follow.
func leader(t *testing.T, nodes []*etcdNode) string {
	t.Helper()
	for _, n := range nodes {
		n.mu.Lock()
		e := n.etcd
		n.mu.Unlock()
		if e != nil && e.Server.Leader() == e.Server.MemberID() {
			return n.Label
		}
	}
	return ""
}

// A fresh external etcd: every member gets the CA, its own server and
// peer certificates, its environment and unit, and is started; the
// control plane gets the API server's client certificate; the phase
// returns only when the real members report healthy, with the leader on
// the control plane's member. A re-run changes and restarts nothing.
func TestEtcdPhaseFormsAndKeepsACluster_RealEtcdSimulatedNodes(t *testing.T) {
	nodes := etcdNodes(t)
	e, status := etcdPhase(t, nodes...)
	if err := e.Run(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, status)
	}
	for _, n := range nodes {
		for _, f := range []string{"ca.crt", "ca.key", "server.crt", "server.key", "peer.crt", "peer.key"} {
			if !n.Did("upload: " + bootstrap.EtcdPKIDir + "/" + f) {
				t.Errorf("%s: no %s uploaded: %q", n.Label, f, n.Steps())
			}
		}
		if !n.Did("upload: "+bootstrap.EtcdEnvFile) || !n.Did("upload: "+bootstrap.EtcdUnit) || !n.Did("restart --no-block etcd") {
			t.Errorf("%s: environment, unit and start: %q", n.Label, n.Steps())
		}
	}
	for _, f := range []string{bootstrap.EtcdCAFile, bootstrap.EtcdClientCertFile, bootstrap.EtcdClientKeyFile} {
		if !nodes[0].Did("upload: " + f) {
			t.Errorf("control plane: no %s: %q", f, nodes[0].Steps())
		}
		if nodes[1].Did("upload: " + f) {
			t.Errorf("kube-node2 got the API server's %s", f)
		}
	}
	if !strings.Contains(status.String(), "etcd: 3 members healthy") {
		t.Errorf("status: %s", status)
	}
	if l := leader(t, nodes); l != "kube-node1" {
		t.Errorf("leader %q after a fresh start, want the control plane's member kube-node1\n%s", l, status)
	}
	// Each member was reached through its own node's connection.
	for i, n := range nodes {
		want := fmt.Sprintf("127.0.0.%d:2379", 11+i)
		n.mu.Lock()
		dials := strings.Join(n.dials, " ")
		n.mu.Unlock()
		if !strings.Contains(dials, want) {
			t.Errorf("%s: dials %q, want %s among them", n.Label, dials, want)
		}
	}

	did, status := reRunEtcd(t, nodes)
	for _, n := range nodes {
		for _, s := range did[n.Label] {
			if strings.HasPrefix(s, "upload: ") || strings.Contains(s, "restart") {
				t.Errorf("%s: a re-run did %q", n.Label, strings.SplitN(s, "\n", 2)[0])
			}
		}
	}
	if !strings.Contains(status.String(), "etcd: 3 members healthy") || strings.Contains(status.String(), "leader moved") {
		t.Errorf("re-run status: %s", status)
	}
}

// reRunEtcd runs the etcd phase again on the same nodes and returns what
// it did on each (its log entries) and its status lines.
func reRunEtcd(t *testing.T, nodes []*etcdNode) (map[string][]string, *bytes.Buffer) {
	t.Helper()
	before := map[string]int{}
	for _, n := range nodes {
		before[n.Label] = len(n.Log())
	}
	e, status := etcdPhase(t, nodes...)
	if err := e.Run(context.Background()); err != nil {
		t.Fatalf("re-run: %v\n%s", err, status)
	}
	did := map[string][]string{}
	for _, n := range nodes {
		did[n.Label] = n.Log()[before[n.Label]:]
	}
	return did, status
}

// A member whose certificate another CA signed gets a new one and is
// restarted; the others keep theirs and keep running.
func TestEtcdPhaseReissuesOnlyForeignCertificates_RealEtcdSimulatedNodes(t *testing.T) {
	nodes := etcdNodes(t)
	e, status := etcdPhase(t, nodes...)
	if err := e.Run(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, status)
	}
	other, err := bootstrap.NewCA("someone-else")
	if err != nil {
		t.Fatal(err)
	}
	pki, err := bootstrap.NewEtcdPKI(other, e.etcdMembers())
	if err != nil {
		t.Fatal(err)
	}
	nodes[1].Files[bootstrap.EtcdPKIDir+"/server.crt"] = pki.Server["kube-node2"].Cert
	reRun, _ := reRunEtcd(t, nodes)
	for i, n := range nodes {
		did := strings.Join(reRun[n.Label], "\n")
		reissued := strings.Contains(did, "upload: "+bootstrap.EtcdPKIDir+"/server.crt") && strings.Contains(did, "restart --no-block etcd")
		if reissued != (i == 1) {
			t.Errorf("%s: re-issued and restarted %v, want %v", n.Label, reissued, i == 1)
		}
		if strings.Contains(did, "upload: "+bootstrap.EtcdPKIDir+"/ca.crt") || strings.Contains(did, "upload: "+bootstrap.EtcdPKIDir+"/peer.crt") {
			t.Errorf("%s: the CA or the peer certificate was replaced", n.Label)
		}
	}
}

// A member whose files cannot be read stops the phase before anything is
// written: a new CA would re-sign every member of a working cluster. A
// member that never comes up fails the phase within its wait, naming
// etcd's health.
func TestEtcdPhaseStopsOnUnreadableOrDeadMember_RealEtcdSimulatedNodes(t *testing.T) {
	nodes := etcdNodes(t)
	nodes[0].unread = true
	e, _ := etcdPhase(t, nodes...)
	if err := e.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "kube-node1") {
		t.Errorf("unreadable member: %v", err)
	}
	for _, n := range nodes {
		if n.Did("upload: ") {
			t.Errorf("%s: written after a member could not be read: %q", n.Label, n.Steps())
		}
	}

	nodes = etcdNodes(t)
	nodes[2].unready = true
	e, _ = etcdPhase(t, nodes...)
	e.Wait = 2 * time.Second
	if err := e.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "etcd not healthy after 2s") {
		t.Errorf("a member that never runs: %v", err)
	}
}

// With stacked etcd the phase touches no node.
func TestEtcdPhaseStackedDoesNothing_SimulatedNodes(t *testing.T) {
	n := newEtcdNode(t, "kube-node1")
	e, _ := etcdPhase(t, n)
	e.Cluster.Etcd = []string{"kube-node1"}
	if !e.Cluster.StackedEtcd() {
		t.Fatal("one member on the control plane is not stacked etcd")
	}
	if err := e.Run(context.Background()); err != nil || len(n.Log()) != 0 {
		t.Errorf("stacked etcd: %v, %q", err, n.Steps())
	}
}
