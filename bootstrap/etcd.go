package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Where k8slab installs external etcd on a member.
const (
	EtcdPKIDir  = "/etc/etcd/pki"
	EtcdEnvFile = "/etc/etcd/etcd.env"
	EtcdUnit    = "/etc/systemd/system/etcd.service"
	EtcdDataDir = "/var/lib/etcd"
)

// EtcdClusterInput describes an external etcd cluster.
type EtcdClusterInput struct {
	Token   string // initial-cluster-token: keeps two clusters from merging
	Members []EtcdMember
	// PeerPort and ClientPort default to 2380 and 2379; the loopback test
	// cluster changes nothing else.
	PeerPort, ClientPort int
	// Dir is where PKI and data live (EtcdPKIDir's parent on real nodes).
	PKIDir, DataDir string
}

func (in EtcdClusterInput) ports() (peer, client int) {
	peer, client = in.PeerPort, in.ClientPort
	if peer == 0 {
		peer = 2380
	}
	if client == 0 {
		client = 2379
	}
	return
}

// ClientEndpoints are the members' client URLs.
func (in EtcdClusterInput) ClientEndpoints() []string {
	_, client := in.ports()
	var out []string
	for _, m := range in.Members {
		out = append(out, fmt.Sprintf("https://%s", net.JoinHostPort(m.IP.String(), fmt.Sprint(client))))
	}
	return out
}

// EtcdEnv renders one member's environment file: etcd reads ETCD_*
// variables, so the unit stays the same on every member.
func EtcdEnv(in EtcdClusterInput, name string) (string, error) {
	peer, client := in.ports()
	var me *EtcdMember
	var initial []string
	for i, m := range in.Members {
		if m.Name == name {
			me = &in.Members[i]
		}
		initial = append(initial, fmt.Sprintf("%s=https://%s", m.Name, net.JoinHostPort(m.IP.String(), fmt.Sprint(peer))))
	}
	if me == nil {
		return "", fmt.Errorf("etcd: %s is not a member", name)
	}
	pki, data := in.PKIDir, in.DataDir
	if pki == "" {
		pki = EtcdPKIDir
	}
	if data == "" {
		data = EtcdDataDir
	}
	ip := me.IP.String()
	hp := func(p int) string { return net.JoinHostPort(ip, fmt.Sprint(p)) }
	lines := []string{
		"ETCD_NAME=" + me.Name,
		"ETCD_DATA_DIR=" + data,
		"ETCD_LISTEN_PEER_URLS=https://" + hp(peer),
		"ETCD_LISTEN_CLIENT_URLS=https://" + hp(client),
		"ETCD_ADVERTISE_CLIENT_URLS=https://" + hp(client),
		"ETCD_INITIAL_ADVERTISE_PEER_URLS=https://" + hp(peer),
		"ETCD_INITIAL_CLUSTER=" + strings.Join(initial, ","),
		"ETCD_INITIAL_CLUSTER_STATE=new",
		"ETCD_INITIAL_CLUSTER_TOKEN=" + in.Token,
		"ETCD_CERT_FILE=" + pki + "/server.crt",
		"ETCD_KEY_FILE=" + pki + "/server.key",
		"ETCD_CLIENT_CERT_AUTH=true",
		"ETCD_TRUSTED_CA_FILE=" + pki + "/ca.crt",
		"ETCD_PEER_CERT_FILE=" + pki + "/peer.crt",
		"ETCD_PEER_KEY_FILE=" + pki + "/peer.key",
		"ETCD_PEER_CLIENT_CERT_AUTH=true",
		"ETCD_PEER_TRUSTED_CA_FILE=" + pki + "/ca.crt",
		// Lab VMs are slow: leader elections must not flap under load.
		// kubespray's defaults; at 2500 ms a follower called an election
		// whenever the control-plane VM, busy with a join, sent its
		// heartbeats a second late, and the leadership left the API
		// server's own member.
		"ETCD_HEARTBEAT_INTERVAL=250",
		"ETCD_ELECTION_TIMEOUT=5000",
		// etcd logs every apply slower than 100 ms and every request
		// slower than 300 ms. On the loaded lab that was ~435 lines a
		// minute, and journald writing them took 17 % of a CPU on the
		// control plane's node, the node that was short of CPU.
		// Slower than 1 s / 2 s, they are still logged.
		"ETCD_WARNING_APPLY_DURATION=1s",
		"ETCD_WARNING_UNARY_REQUEST_DURATION=2s",
	}
	return strings.Join(lines, "\n") + "\n", nil
}

// EtcdUnitFile is the systemd unit of an external etcd member.
const EtcdUnitFile = `[Unit]
Description=etcd (installed by k8slab)
Documentation=https://etcd.io
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
EnvironmentFile=` + EtcdEnvFile + `
ExecStart=/usr/local/bin/etcd
Restart=always
RestartSec=5s
LimitNOFILE=65536
# Every quorum read of the API server waits on each member's answers, and
# kubespray's host model shares a member's node with the kubelet,
# containerd and pods: etcd must not queue behind them (the lab's starved
# members took 10-58 s per linearizable read at the default weight). Ten
# times the default CPU weight, and etcd's tuning guide's I/O priority
# (ionice -c2 -n0).
CPUWeight=1000
IOSchedulingClass=best-effort
IOSchedulingPriority=0

[Install]
WantedBy=multi-user.target
`

// EtcdHealth is what k8slab learned about the cluster.
type EtcdHealth struct {
	Members []string `json:"members"`
	Leader  string   `json:"leader"`
	Version string   `json:"version"`
}

// CheckEtcd connects with k8slab's client certificate, lists the members
// and asks every endpoint for its status. dial, when set, carries the
// connections (e.g. through SSH), so no etcd port needs to be reachable
// from the workstation.
func CheckEtcd(ctx context.Context, endpoints []string, pki *EtcdPKI, want int, dial func(ctx context.Context, addr string) (net.Conn, error)) (EtcdHealth, error) {
	var h EtcdHealth
	cli, err := etcdClient(endpoints, pki, dial)
	if err != nil {
		return h, err
	}
	defer cli.Close()
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return h, fmt.Errorf("etcd member list: %w", err)
	}
	names := map[uint64]string{}
	var problems []string
	for _, m := range ml.Members {
		if m.Name == "" {
			problems = append(problems, fmt.Sprintf("member %x has not started", m.ID))
		}
		names[m.ID] = m.Name
		h.Members = append(h.Members, m.Name)
	}
	sort.Strings(h.Members)
	if len(ml.Members) != want {
		problems = append(problems, fmt.Sprintf("%d members, want %d", len(ml.Members), want))
	}
	for _, ep := range endpoints {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", ep, err))
			continue
		}
		h.Leader, h.Version = names[st.Leader], st.Version
		if len(st.Errors) > 0 {
			problems = append(problems, fmt.Sprintf("%s: %s", ep, strings.Join(st.Errors, "; ")))
		}
	}
	if h.Leader == "" {
		problems = append(problems, "no leader")
	}
	if len(problems) > 0 {
		return h, errors.New("etcd unhealthy: " + strings.Join(problems, "; "))
	}
	return h, nil
}

// etcdClient connects with k8slab's client certificate; dial, when set,
// carries the connections (e.g. through SSH).
func etcdClient(endpoints []string, pki *EtcdPKI, dial func(ctx context.Context, addr string) (net.Conn, error)) (*clientv3.Client, error) {
	cert, err := tls.X509KeyPair(pki.HealthClient.Cert, pki.HealthClient.Key)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.CA.Cert)
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 10 * time.Second,
		TLS:         &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		// The client's own logging would interleave with k8slab's output.
		Logger: zap.NewNop(),
	}
	if dial != nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(dial)}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

// SnapshotEtcd streams a consistent snapshot of the keyspace (what
// `etcdctl snapshot save` does) to w from the first endpoint that answers
// a status request within snapshotMemberTimeout, and returns its size and that
// endpoint. A member that is down is passed over rather than waited for:
// on the emulated lab the first member's data had been deleted under it and the
// snapshot waited on its dial until the run was stopped; any member with
// quorum holds the whole keyspace.
func SnapshotEtcd(ctx context.Context, endpoints []string, pki *EtcdPKI, dial func(ctx context.Context, addr string) (net.Conn, error), w io.Writer) (int64, string, error) {
	var tried []string
	for _, ep := range endpoints {
		n, err := snapshotFrom(ctx, ep, pki, dial, w)
		if err == nil {
			return n, ep, nil
		}
		if n > 0 || ctx.Err() != nil {
			// w holds part of a snapshot: another member's cannot follow it.
			return n, ep, fmt.Errorf("etcd snapshot from %s: %w", ep, err)
		}
		tried = append(tried, ep+": "+err.Error())
	}
	return 0, "", fmt.Errorf("etcd snapshot: no member answered: %s", strings.Join(tried, "; "))
}

// snapshotMemberTimeout is how long a member has to answer before the
// snapshot is taken from the next one.
const snapshotMemberTimeout = 30 * time.Second

func snapshotFrom(ctx context.Context, endpoint string, pki *EtcdPKI, dial func(ctx context.Context, addr string) (net.Conn, error), w io.Writer) (int64, error) {
	cli, err := etcdClient([]string{endpoint}, pki, dial)
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	sctx, cancel := context.WithTimeout(ctx, snapshotMemberTimeout)
	_, err = cli.Status(sctx, endpoint)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("status: %w", err)
	}
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(w, rc)
}

// MoveEtcdLeader makes the member named to the leader, so the API server
// beside it writes without a round trip to another node (in the lab, two
// router hops away). It returns the former leader's name, "" when to
// already leads. etcd accepts the request only from the current leader.
func MoveEtcdLeader(ctx context.Context, endpoints []string, pki *EtcdPKI, dial func(ctx context.Context, addr string) (net.Conn, error), to string) (string, error) {
	cli, err := etcdClient(endpoints, pki, dial)
	if err != nil {
		return "", err
	}
	defer cli.Close()
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("etcd member list: %w", err)
	}
	var target uint64
	byID := map[uint64]*etcdserverpb.Member{}
	for _, m := range ml.Members {
		byID[m.ID] = m
		if m.Name == to {
			target = m.ID
		}
	}
	if target == 0 {
		return "", fmt.Errorf("etcd: no member named %s", to)
	}
	st, err := cli.Status(ctx, endpoints[0])
	if err != nil {
		return "", fmt.Errorf("etcd status: %w", err)
	}
	if st.Leader == target {
		return "", nil
	}
	leader := byID[st.Leader]
	if leader == nil || len(leader.ClientURLs) == 0 {
		return "", fmt.Errorf("etcd: leader %x is not a known member", st.Leader)
	}
	lc, err := etcdClient(leader.ClientURLs[:1], pki, dial)
	if err != nil {
		return "", err
	}
	defer lc.Close()
	if _, err := lc.MoveLeader(ctx, target); err != nil {
		return "", fmt.Errorf("etcd: moving the leader from %s to %s: %w", leader.Name, to, err)
	}
	return leader.Name, nil
}
