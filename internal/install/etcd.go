package install

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/kube"
	"github.com/k8slab/k8slab/internal/phase"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/provision"
)

// Etcd installs the external etcd cluster (kubespray's "host" model) on
// the etcd nodes, with a PKI k8slab generates, and checks it with the etcd
// client through the SSH connection. With stacked etcd it does nothing:
// kubeadm runs etcd as a static pod then.
type Etcd struct{ *Context }

func (*Etcd) Name() string { return "etcd" }

// Dialer is implemented by transports that can open connections from the
// node (the SSH client does).
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// tunnel is h's Dialer: connections opened from the node through its SSH
// connection, so no port needs to be reachable from the workstation.
func tunnel(h host.Host) (Dialer, error) {
	d, ok := h.(Dialer)
	if !ok {
		return nil, fmt.Errorf("host %s: its transport cannot tunnel connections", h.Name())
	}
	return d, nil
}

// etcdDial is the etcd client's dial function: each member's address is
// reached through that member's own SSH connection, anything else through
// the first member's. All of them went through the control plane's before,
// the busiest node's sshd (a no-op etcd phase took 46 s on the emulated
// lab, most of it in the health check). addrs are a node's addresses
// besides its SSH target (its node-ip), nil when there are none.
func etcdDial(members []string, hosts map[string]host.Host, addrs func(node string) []string) (func(context.Context, string) (net.Conn, error), error) {
	byAddr := map[string]Dialer{}
	var first Dialer
	for i, n := range members {
		d, err := tunnel(hosts[n])
		if err != nil {
			return nil, err
		}
		if i == 0 {
			first = d
		}
		byAddr[cluster.Address(n)] = d
		if addrs != nil {
			for _, a := range addrs(n) {
				byAddr[a] = d
			}
		}
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		h, _, _ := net.SplitHostPort(addr)
		d, ok := byAddr[h]
		if !ok {
			d = first
		}
		return d.DialContext(ctx, "tcp", addr)
	}, nil
}

// KubeClient is a client for the API server of the admin kubeconfig,
// reached through the control plane's tunnel.
func KubeClient(cp host.Host, admin []byte) (*kube.Client, error) {
	d, err := tunnel(cp)
	if err != nil {
		return nil, err
	}
	return kube.NewClient(admin, d.DialContext)
}

func (e *Etcd) Plan() []phase.Step {
	if e.Cluster.StackedEtcd() {
		return []phase.Step{{Node: e.Cluster.ControlPlane, Action: "stacked etcd: kubeadm runs it as a static pod"}}
	}
	var steps []phase.Step
	for _, n := range e.Cluster.Etcd {
		steps = append(steps, phase.Step{Node: n, Action: "etcd " + e.Release.Etcd + " member: PKI under /etc/etcd/pki, systemd unit etcd.service"})
	}
	return append(steps, phase.Step{Node: e.Cluster.ControlPlane, Action: "etcd CA and apiserver-etcd-client certificate under /etc/kubernetes/pki"})
}

// etcdMembers are the external etcd's members, named and addressed as
// preflight found them.
func (c *Context) etcdMembers() []bootstrap.EtcdMember {
	var m []bootstrap.EtcdMember
	for _, name := range c.Cluster.Etcd {
		// Before preflight (plan) the node's own name and address stand in.
		n := c.Node(name)
		host, ip := n.Facts.Hostname, n.IP
		if ip == "" {
			ip = n.Address
		}
		if host == "" {
			host = name
		}
		m = append(m, bootstrap.EtcdMember{Name: host, IP: net.ParseIP(ip)})
	}
	return m
}

func (c *Context) etcdInput() bootstrap.EtcdClusterInput {
	return bootstrap.EtcdClusterInput{Token: "k8slab-" + c.Cluster.Name, Members: c.etcdMembers()}
}

// etcdClientEndpoints are the external etcd's client URLs (none when
// etcd is stacked: kubeadm's local member).
func (c *Context) etcdClientEndpoints() []string {
	if c.Cluster.StackedEtcd() {
		return nil
	}
	return c.etcdInput().ClientEndpoints()
}

func (e *Etcd) Run(ctx context.Context) error {
	if e.Cluster.StackedEtcd() {
		return nil
	}
	ca, err := e.loadOrCreateCA(ctx)
	if err != nil {
		return err
	}
	pki, err := bootstrap.NewEtcdPKI(ca, e.etcdMembers())
	if err != nil {
		return err
	}
	in := e.etcdInput()
	var touched atomic.Bool // a member was (re)started by this run
	err = e.each(ctx, "etcd", e.Cluster.Etcd, nil, func(ctx context.Context, n Node, t *run.Task) error {
		name := n.Facts.Hostname
		files := []provision.FileSpec{
			provision.Generated(bootstrap.EtcdPKIDir+"/ca.crt", 0o644, string(ca.Cert)),
			provision.Generated(bootstrap.EtcdPKIDir+"/ca.key", 0o600, string(ca.Key)),
		}
		// Certificates already on the node and valid under this CA are
		// kept: a re-run must not restart etcd for fresh copies.
		for _, kind := range []string{"server", "peer"} {
			ok, err := validCert(ctx, t.Host, bootstrap.EtcdPKIDir+"/"+kind+".crt", ca)
			if err != nil {
				return err
			}
			if ok {
				continue
			}
			kp := pki.Server[name]
			if kind == "peer" {
				kp = pki.Peer[name]
			}
			files = append(files,
				provision.Generated(bootstrap.EtcdPKIDir+"/"+kind+".crt", 0o644, string(kp.Cert)),
				provision.Generated(bootstrap.EtcdPKIDir+"/"+kind+".key", 0o600, string(kp.Key)))
		}
		env, err := bootstrap.EtcdEnv(in, name)
		if err != nil {
			return err
		}
		files = append(files,
			provision.Generated(bootstrap.EtcdEnvFile, 0o644, env),
			provision.Generated(bootstrap.EtcdUnit, 0o644, bootstrap.EtcdUnitFile))
		changed, err := provision.SyncFiles(ctx, t.Host, files)
		if err != nil {
			return err
		}
		// --no-block: a new member waits for quorum, which needs the others.
		cmd := "systemctl is-active -q etcd || { systemctl daemon-reload && systemctl enable -q etcd && systemctl start --no-block etcd && echo started; }"
		if len(changed) > 0 {
			cmd = "systemctl daemon-reload && systemctl enable -q etcd && systemctl restart --no-block etcd && echo started"
			t.Status("changed: %s", strings.Join(changed, ", "))
		}
		out, err := host.Output(ctx, t.Host, cmd)
		if strings.Contains(out, "started") {
			touched.Store(true)
			if len(changed) == 0 {
				t.Status("started etcd (it was not running)")
			}
		} else if err == nil {
			t.Status("nothing to do")
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := e.installClientCert(ctx, pki); err != nil {
		return err
	}
	return e.waitHealthy(ctx, pki, in.ClientEndpoints(), touched.Load())
}

// loadOrCreateCA reuses the cluster's etcd CA from any member that has it.
func (e *Etcd) loadOrCreateCA(ctx context.Context) (*bootstrap.CA, error) {
	for _, n := range e.Cluster.Etcd {
		// A member that cannot be read stops the run: a new CA would
		// re-sign every member of a working cluster.
		ca, err := readCA(ctx, e.Hosts[n], bootstrap.EtcdPKIDir)
		if ca != nil || err != nil {
			return ca, err
		}
	}
	return bootstrap.NewCA("etcd-ca")
}

// validCert says whether the certificate at path is signed by ca and good
// for another month. A node that did not answer is an error, not an
// invalid certificate: re-issuing would restart a working member.
func validCert(ctx context.Context, h host.Host, path string, ca *bootstrap.CA) (bool, error) {
	b, err := readFileIfExists(ctx, h, path)
	if b == nil || err != nil {
		return false, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return false, nil
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return false, nil
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.Cert)
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil && time.Until(cert.NotAfter) > 30*24*time.Hour, nil
}

// installClientCert gives the control plane what kube-apiserver needs to
// reach etcd, where ClusterConfiguration.etcd.external points.
func (e *Etcd) installClientCert(ctx context.Context, pki *bootstrap.EtcdPKI) error {
	h := e.Hosts[e.Cluster.ControlPlane]
	files := []provision.FileSpec{provision.Generated(bootstrap.EtcdCAFile, 0o644, string(pki.CA.Cert))}
	ok, err := validCert(ctx, h, bootstrap.EtcdClientCertFile, pki.CA)
	if err != nil {
		return err
	}
	if !ok {
		files = append(files,
			provision.Generated(bootstrap.EtcdClientCertFile, 0o644, string(pki.APIServerClient.Cert)),
			provision.Generated(bootstrap.EtcdClientKeyFile, 0o600, string(pki.APIServerClient.Key)))
	}
	_, err = provision.SyncFiles(ctx, h, files)
	return err
}

// waitHealthy asks etcd itself (client v3, through each member's SSH
// connection: no port needs to be open to the workstation). Leadership
// is moved home (leaderMoves) only when this run started a member: a
// re-run that changed nothing moved it on the emulated lab, and the API server's
// etcd checks failed for a while (whether that is why kube-apiserver was
// lost a minute later is not known: on the emulated lab it was lost without a move).
func (e *Etcd) waitHealthy(ctx context.Context, pki *bootstrap.EtcdPKI, endpoints []string, moveLeader bool) error {
	dial, err := etcdDial(e.Cluster.Etcd, e.Hosts, e.nodeIPs)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	start := time.Now()
	deadline := start.Add(e.Wait)
	for {
		asked := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		h, err := bootstrap.CheckEtcd(cctx, endpoints, pki, len(endpoints), dial)
		cancel()
		took := time.Since(asked)
		if err == nil {
			fmt.Fprintf(e.Runner.StatusWriter(), "etcd: %d members healthy (%s), leader %s, version %s\n", len(h.Members), strings.Join(h.Members, ", "), h.Leader, h.Version)
			switch cp := e.controlPlane().Facts.Hostname; {
			case leaderMoves(moveLeader, h.Leader, cp):
				e.leaderHome(ctx, pki, endpoints, dial)
			case h.Leader != cp:
				fmt.Fprintf(e.Runner.StatusWriter(), "etcd: leader stays on %s: nothing was started, a working cluster is not disturbed\n", h.Leader)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd not healthy after %s: %w", e.Wait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pace(startPoll(time.Since(start)), took)):
		}
	}
}

// leaderMoves says whether the etcd phase moves leadership to the
// control plane's member: kube-apiserver talks to that member, and every
// write it makes otherwise waits on a round trip to another node (a lab
// showed the cost: with the leader on a starved VM, every API request
// stalled). Only when this run started a member: on a re-run that
// started nothing, the move itself is the disturbance. Leadership can
// move again later (an election under load); this is an optimisation.
func leaderMoves(started bool, leader, controlPlane string) bool {
	return started && leader != controlPlane
}

// leaderHome moves etcd's leadership back to the control plane's member
// when it is elsewhere; the join phase calls it before each join too,
// since a join loads the control plane and elections follow (a lab saw
// the leader move to kube-node2 during one join and kube-apiserver stall
// and restart while kube-node2 itself joined next).
func (c *Context) leaderHome(ctx context.Context, pki *bootstrap.EtcdPKI, endpoints []string, dial func(context.Context, string) (net.Conn, error)) {
	to := c.controlPlane().Facts.Hostname
	if !slices.Contains(c.Cluster.Etcd, c.Cluster.ControlPlane) || len(c.Cluster.Etcd) < 2 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	from, err := bootstrap.MoveEtcdLeader(cctx, endpoints, pki, dial, to)
	switch {
	case err != nil:
		fmt.Fprintf(c.Runner.StatusWriter(), "etcd: leader stays where it is: %v\n", err)
	case from != "":
		fmt.Fprintf(c.Runner.StatusWriter(), "etcd: leader moved from %s to %s (the control plane's member)\n", from, to)
	}
}
