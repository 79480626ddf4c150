package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/pkg/sftp"
	xssh "golang.org/x/crypto/ssh"
)

// ErrConnectionLost is wrapped by errors from commands whose connection
// died under them: the command's outcome on the node is unknown.
var ErrConnectionLost = errors.New("connection lost")

// ErrTimeout is wrapped by errors from commands stopped by their timeout.
var ErrTimeout = errors.New("timed out")

// Client is one node's connection. It implements host.Host and is safe for
// concurrent use: commands run as parallel sessions on one connection.
type Client struct {
	pool   *Pool
	target Target // the node as parsed from the user's list
	ep     Endpoint
	isJump bool

	mu   sync.Mutex
	conn *xssh.Client
	sftp *sftp.Client
	sudo sudoMode
	// dials counts successful connects: tests use it to prove reuse.
	dials int
	// inUse counts what is under way on the connection (commands,
	// transfers, tunnelled connections): keepalive probes only then.
	inUse atomic.Int32
}

// use marks the connection in use until the returned func is called.
func (c *Client) use() func() {
	c.inUse.Add(1)
	return func() { c.inUse.Add(-1) }
}

var _ host.Host = (*Client)(nil)

// Name is the node as the user wrote it.
func (c *Client) Name() string { return c.ep.Name }

// Target is the node as parsed from the user's list: its host, and the
// user and port written there, if any.
func (c *Client) Target() Target { return c.target }

// User is the login user after ssh_config and flags are applied.
func (c *Client) User() string { return c.ep.User }

// Dials reports how many connections this client has opened.
func (c *Client) Dials() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials
}

// Connect dials now (instead of on first use) so a run can report
// unreachable nodes before it starts changing anything.
func (c *Client) Connect(ctx context.Context) error {
	_, err := c.connect(ctx)
	return err
}

func (c *Client) connect(ctx context.Context) (*xssh.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return c.conn, nil
	}
	conn, read, err := c.pool.handshake(ctx, c.ep)
	if err != nil {
		return nil, err
	}
	if !c.isJump && c.ep.User != "root" && c.sudo == sudoUnknown {
		mode, err := c.pool.detectSudo(ctx, conn)
		if err != nil {
			conn.Close()
			return nil, err
		}
		c.sudo = mode
	}
	c.conn = conn
	c.dials++
	c.keepalive(conn, read)
	return conn, nil
}

// drop forgets conn if it is still the current one, so the next use
// redials; a stale pointer from another goroutine changes nothing.
func (c *Client) drop(conn *xssh.Client) {
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
		if c.sftp != nil {
			c.sftp.Close()
			c.sftp = nil
		}
	}
	c.mu.Unlock()
	conn.Close()
}

// Close ends the connection; a later use dials again.
func (c *Client) Close() error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		c.drop(conn)
	}
	return nil
}

// keepalive closes a connection whose peer stopped answering, which turns
// a silently cut link into a prompt "connection lost" instead of a hang.
// It probes only while something is under way on the connection: an idle
// pooled connection costs nothing (probing 40 idle connections every 15 s
// was an eighth of `k8slab exec`'s CPU while slow logins kept the run
// going), and the next use starts probing before it can hang. It is a
// timer, not a goroutine waiting on one: a short command on 200 nodes
// ends before any timer fires.
func (c *Client) keepalive(conn *xssh.Client, read *countingConn) {
	interval := c.pool.opts.KeepAlive
	alive := &liveness{read: read.n.Load}
	var tick func()
	tick = func() {
		c.mu.Lock()
		current := c.conn == conn
		c.mu.Unlock()
		if !current {
			return // dropped or closed: the next connection has its own
		}
		if c.inUse.Load() == 0 {
			alive.answered() // idle: nothing to hang, nothing missed
			time.AfterFunc(interval, tick)
			return
		}
		sent := time.Now()
		reply := make(chan error, 1)
		go func() {
			_, _, err := conn.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		select {
		case err := <-reply:
			if err != nil {
				c.drop(conn)
				return
			}
			alive.answered()
		case <-time.After(interval):
			if alive.unanswered() {
				c.drop(conn)
				return
			}
		}
		time.AfterFunc(max(interval-time.Since(sent), 0), tick)
	}
	time.AfterFunc(interval, tick)
}

// liveness decides when a peer is gone: three probes in a row unanswered
// with nothing at all received meanwhile. A starved node busy receiving a
// large upload answers probes only after the data queued before them, yet
// keeps acknowledging that data; counting those probes as missed is the
// likely cause of a connection dropped mid-upload on a niced VM.
type liveness struct {
	read   func() int64 // bytes received on the connection so far
	last   int64
	missed int
}

func (l *liveness) answered() { l.missed, l.last = 0, l.read() }

// unanswered records a probe that got no reply in time; true: give up.
func (l *liveness) unanswered() bool {
	if n := l.read(); n != l.last {
		l.last, l.missed = n, 0
		return false
	}
	l.missed++
	return l.missed >= 3
}

// countingConn counts the bytes read from the peer for liveness.
type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// session opens a session, redialling once when the connection turns out
// to be dead before anything ran: then a retry cannot repeat a command.
func (c *Client) session(ctx context.Context) (*xssh.Client, *xssh.Session, error) {
	for attempt := 0; ; attempt++ {
		conn, err := c.connect(ctx)
		if err != nil {
			if attempt > 0 {
				return nil, nil, fmt.Errorf("%w; redial: %v", ErrConnectionLost, err)
			}
			return nil, nil, err
		}
		s, err := conn.NewSession()
		if err == nil {
			return conn, s, nil
		}
		c.drop(conn)
		if attempt > 0 {
			return nil, nil, fmt.Errorf("%w: %v", ErrConnectionLost, err)
		}
	}
}

// Run executes cmd.Command as root (through sudo for other users).
func (c *Client) Run(ctx context.Context, cmd host.Cmd) error {
	defer c.use()()
	limit := timeoutLimit(ctx, time.Now(), c.pool.opts.CommandTimeout)
	if t := c.pool.opts.CommandTimeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	conn, s, err := c.session(ctx)
	if err != nil {
		return err
	}
	defer s.Close()

	errTail, tail := host.Tail()
	if cmd.Stderr != nil {
		s.Stderr = smallCopy{io.MultiWriter(cmd.Stderr, errTail)}
	} else {
		s.Stderr = smallCopy{errTail}
	}
	if cmd.Stdout != nil {
		s.Stdout = smallCopy{cmd.Stdout}
	}
	command, stdin := c.wrap(cmd.Command, cmd.Stdin)
	s.Stdin = stdin

	if err := s.Start(command); err != nil {
		c.drop(conn)
		return fmt.Errorf("%w: start: %v", ErrConnectionLost, err)
	}
	// The context ends a command by killing it and closing the
	// connection, which ends Wait (no goroutine per command for that).
	// The remote side may be unreachable: do not wait for a polite
	// close, and do not reuse a connection in an unknown state.
	stop := context.AfterFunc(ctx, func() {
		s.Signal(xssh.SIGKILL)
		c.drop(conn)
	})
	err = s.Wait()
	if !stop() {
		if ctx.Err() == context.DeadlineExceeded {
			return fmt.Errorf("%w after %s", ErrTimeout, limit)
		}
		return ctx.Err()
	}
	var exitErr *xssh.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exitErr):
		return &host.ExitError{Code: exitErr.ExitStatus(), Stderr: lastLines(c.scrubSudo(tail()), 3)}
	default:
		// No exit status: the channel died with the connection (sshd
		// killed, node rebooted). Redial once so the report can tell
		// "node down" from "connection blip".
		c.drop(conn)
		if _, rerr := c.connect(ctx); rerr != nil {
			return fmt.Errorf("%w during command (outcome unknown): %v; redial failed: %v", ErrConnectionLost, err, rerr)
		}
		return fmt.Errorf("%w during command (outcome unknown; node answers again): %v", ErrConnectionLost, err)
	}
}

// timeoutLimit names the limit that will stop a command started at start:
// the pool's CommandTimeout, or the caller's deadline when that comes
// first (one run's unlock, given 30 s, said "timed out after 10m0s").
func timeoutLimit(ctx context.Context, start time.Time, command time.Duration) string {
	d, ok := ctx.Deadline()
	switch {
	case ok && (command <= 0 || d.Before(start.Add(command))):
		return fmt.Sprintf("%s (the caller's limit)", d.Sub(start).Round(time.Second))
	case command > 0:
		return command.String()
	}
	return "the run's deadline"
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sftpClient returns the connection's SFTP subsystem, opened once.
func (c *Client) sftpClient(ctx context.Context) (*sftp.Client, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sftp != nil && c.conn == conn {
		return c.sftp, nil
	}
	sc, err := sftp.NewClient(conn, sftp.UseConcurrentWrites(true))
	if err != nil {
		return nil, fmt.Errorf("sftp: %w", err)
	}
	c.sftp = sc
	return sc, nil
}

// DialContext opens a TCP connection from the node (like ssh -W), so a
// client on the workstation reaches ports that only the node can reach:
// etcd's client port, the API server on loopback.
func (c *Client) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	done := c.use()
	conn, err := c.connect(ctx)
	if err != nil {
		done()
		return nil, err
	}
	nc, err := conn.DialContext(ctx, network, addr)
	if err != nil {
		done()
		return nil, err
	}
	return &tunnelConn{Conn: nc, done: done}, nil
}

// tunnelConn keeps its SSH connection in use until it is closed.
type tunnelConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (t *tunnelConn) Close() error {
	t.once.Do(t.done)
	return t.Conn.Close()
}

// copyBuffers hold the buffers a command's output is copied through.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}

// smallCopy takes a command's output through a pooled 8 KiB buffer: the
// session copies stdout and stderr with io.Copy, which otherwise makes a
// new 32 KiB buffer for each stream of each command (on 200 hosts, about
// a tenth of the CPU `exec` spent beyond a plain x/crypto/ssh fan-out).
type smallCopy struct{ w io.Writer }

func (c smallCopy) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c smallCopy) ReadFrom(r io.Reader) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{c.w}, r, *bp)
}
