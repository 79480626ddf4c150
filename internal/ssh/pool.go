// Package ssh is k8slab's transport: one reused OpenSSH-compatible
// connection per node, with the host-key, auth, jump-host and sudo
// behaviour an OpenSSH user expects. Everything above it sees host.Host.
package ssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/kevinburke/ssh_config"
	xssh "golang.org/x/crypto/ssh"
)

// Options are the settings shared by every connection of a run.
type Options struct {
	// User is the login user when neither the node spec nor ~/.ssh/config
	// names one; UserSet says it came from a flag and so beats ssh_config.
	User    string
	UserSet bool
	// KeyFiles replace the default keys (~/.ssh/id_ed25519, id_ecdsa, id_rsa).
	KeyFiles []string
	// Password serves password and keyboard-interactive auth and sudo -S.
	Password string
	// Passphrase asks for an encrypted key's passphrase; nil in unattended runs.
	Passphrase func(path string) ([]byte, error)
	// Jump is [user@]host[:port] of a bastion (ProxyJump).
	Jump           string
	KnownHostsFile string
	HostKeyPolicy  HostKeyPolicy
	SSHConfig      *ssh_config.Config

	DialTimeout time.Duration
	// CommandTimeout bounds each Run; 0 means only the caller's context does.
	CommandTimeout time.Duration
	// KeepAlive is the interval of keepalive@openssh.com probes; a connection
	// that misses three answers in a row is closed and counts as lost.
	KeepAlive time.Duration
	// Dial opens the TCP connection; nil uses net.Dialer. The lab and the
	// benchmark replace it (network namespace, loopback).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Progress is told about uploads of ProgressMin bytes or more
	// (default 100 MB): binaries and image tarballs, not config files.
	Progress    func(host, path string, done, total int64)
	ProgressMin int64
}

// Pool owns the state shared by all nodes of a run: parsed keys, the
// known_hosts database and jump-host connections.
type Pool struct {
	opts  Options
	keys  *keyring
	hosts *hostKeys

	mu      sync.Mutex
	jumps   map[string]*Client
	clients []*Client
}

// NewPool checks the options once, before any node is touched.
func NewPool(o Options) (*Pool, error) {
	if o.HostKeyPolicy == "" {
		o.HostKeyPolicy = AcceptNew
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 15 * time.Second
	}
	if o.ProgressMin == 0 {
		o.ProgressMin = 100 << 20
	}
	if o.KnownHostsFile == "" {
		o.KnownHostsFile = expandHome("~/.ssh/known_hosts")
	}
	hk, err := newHostKeys(o.HostKeyPolicy, o.KnownHostsFile)
	if err != nil {
		return nil, err
	}
	p := &Pool{
		opts:  o,
		keys:  &keyring{passphrase: o.Passphrase, keys: map[string]keyResult{}},
		hosts: hk,
		jumps: map[string]*Client{},
	}
	// Keys named on the command line are loaded now: an unreadable or
	// locked key is bad input, reported before any node is contacted.
	for _, k := range o.KeyFiles {
		if _, err := p.keys.signer(k, true); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Host returns the client for one target; it dials lazily on first use.
func (p *Pool) Host(t Target) (*Client, error) {
	ep, err := resolve(t, &p.opts)
	if err != nil {
		return nil, err
	}
	c := &Client{pool: p, target: t, ep: ep}
	p.mu.Lock()
	p.clients = append(p.clients, c)
	p.mu.Unlock()
	return c, nil
}

// Close closes every connection the pool opened.
func (p *Pool) Close() error {
	p.mu.Lock()
	all := append([]*Client(nil), p.clients...)
	for _, j := range p.jumps {
		all = append(all, j)
	}
	p.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
	return nil
}

// jump returns the (shared) connection to a bastion.
func (p *Pool) jump(spec string) (*Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.jumps[spec]; ok {
		return c, nil
	}
	t, err := ParseTarget(spec)
	if err != nil {
		return nil, fmt.Errorf("--jump: %w", err)
	}
	o := p.opts
	o.Jump = "" // one hop: the bastion itself is dialled directly
	ep, err := resolve(t, &o)
	if err != nil {
		return nil, err
	}
	ep.Jump = ""
	c := &Client{pool: p, ep: ep, isJump: true}
	p.jumps[spec] = c
	return c, nil
}

// dialTCP opens the transport-level connection for ep, through its jump
// host when it has one.
func (p *Pool) dialTCP(ctx context.Context, ep Endpoint) (net.Conn, error) {
	if ep.Jump != "" {
		j, err := p.jump(ep.Jump)
		if err != nil {
			return nil, err
		}
		jc, err := j.connect(ctx)
		if err != nil {
			return nil, fmt.Errorf("jump host %s: %w", ep.Jump, err)
		}
		conn, err := jc.DialContext(ctx, "tcp", ep.Addr)
		if err != nil {
			// A dead bastion connection must not poison every later dial.
			j.drop(jc)
			return nil, fmt.Errorf("via jump host %s: %w", ep.Jump, err)
		}
		return conn, nil
	}
	if p.opts.Dial != nil {
		return p.opts.Dial(ctx, "tcp", ep.Addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", ep.Addr)
}

// handshake dials and authenticates, bounded by DialTimeout as a whole:
// a node that accepts TCP but never speaks SSH must not hang the run.
func (p *Pool) handshake(ctx context.Context, ep Endpoint) (*xssh.Client, *countingConn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.DialTimeout)
	defer cancel()
	methods, tried, err := p.keys.authFor(ep, p.opts.Password)
	if err != nil {
		return nil, nil, err
	}
	tcp, err := p.dialTCP(ctx, ep)
	if err != nil {
		return nil, nil, classifyDial(ctx, err, p.opts.DialTimeout)
	}
	conn := &countingConn{Conn: tcp}
	cfg := &xssh.ClientConfig{
		User:              ep.User,
		Auth:              methods,
		HostKeyCallback:   p.hosts.callback(ep.Name),
		HostKeyAlgorithms: p.hosts.algorithms(ep.Addr),
		Timeout:           p.opts.DialTimeout,
	}
	// The handshake runs here, not in a goroutine of its own: the context
	// closes the connection to end it (one goroutine and its stack less
	// per node).
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, ch, req, err := xssh.NewClientConn(conn, ep.Addr, cfg)
	if !stop() {
		if err == nil {
			c.Close()
		}
		return nil, nil, classifyDial(ctx, ctx.Err(), p.opts.DialTimeout)
	}
	if err != nil {
		conn.Close()
		return nil, nil, classifyHandshake(err, ep, tried)
	}
	return xssh.NewClient(c, ch, req), conn, nil
}

func classifyDial(ctx context.Context, err error, limit time.Duration) error {
	// The dial's own deadline is the context's: on a loaded machine its
	// "i/o timeout" can come back before the context reports itself done.
	var ne net.Error
	if ctx.Err() == context.DeadlineExceeded || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("connect: timed out after %s", limit)
	}
	return fmt.Errorf("connect: %w", err)
}

func classifyHandshake(err error, ep Endpoint, tried string) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unable to authenticate"):
		return fmt.Errorf("authentication failed for %s@%s (tried %s)", ep.User, ep.Addr, tried)
	case strings.Contains(msg, "no common algorithm for host key"):
		return fmt.Errorf("ssh handshake: %w (the server no longer offers the host key type recorded in known_hosts: was it reinstalled?)", err)
	}
	return fmt.Errorf("ssh handshake: %w", err)
}
