package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/lock"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/internal/ssh"
	"github.com/k8slab/k8slab/topology"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// Exit codes, stable for scripts (see README).
const (
	exitOK       = 0
	exitFailed   = 1 // a step failed on at least one node
	exitBadInput = 2 // refused before any node was touched
	// exitIncomplete: installed, but Calico or the nodes did not become
	// ready in time (e.g. Calico's images are not available offline).
	exitIncomplete = 5
	// exitLocked: another run holds the nodes' lock (nothing was changed).
	exitLocked = 4
	// exitNoCluster: the nodes hold no cluster to verify, reinstall or
	// export (nothing was changed). reset of nodes with nothing on them
	// succeeds: they are as asked.
	exitNoCluster = 6
)

// noCluster is the exit for a cluster file that cannot be read: 6 when it
// is not there, 1 when reading it failed.
func noCluster(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return &exitError{exitNoCluster, err}
	}
	return &exitError{exitFailed, err}
}

// exitError carries the process exit code up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func badInput(format string, args ...any) error {
	return &exitError{exitBadInput, fmt.Errorf(format, args...)}
}

// connFlags are shared by every command that talks to nodes.
func connFlags() []cli.Flag {
	return append(categorized(catConnection,
		&cli.StringFlag{Name: "nodes", Usage: "comma list of `[user@]host[:port]`", EnvVars: []string{"K8SLAB_NODES"}},
		&cli.StringFlag{Name: "user", Value: "root", Usage: "login user when a node names none (non-root users become root with sudo)"},
		&cli.StringSliceFlag{Name: "ssh-key", Usage: "private key file (repeatable); default ~/.ssh/id_ed25519, id_ecdsa, id_rsa", EnvVars: []string{"K8SLAB_SSH_KEY"}},
		&cli.StringFlag{Name: "password", Usage: "password for login and sudo (prefer the environment variable: flags show in ps)", EnvVars: []string{"K8SLAB_SSH_PASSWORD"}},
		&cli.BoolFlag{Name: "ask-password", Usage: "prompt for the password on the terminal"},
		&cli.StringFlag{Name: "jump", Usage: "jump host `[user@]host[:port]` (like ssh -J)"},
		&cli.StringFlag{Name: "known-hosts", Usage: "known_hosts `FILE`", Value: "~/.ssh/known_hosts", EnvVars: []string{"K8SLAB_KNOWN_HOSTS"}},
		&cli.StringFlag{Name: "host-key-policy", Value: "accept-new", Usage: "strict | accept-new | insecure"},
		&cli.StringFlag{Name: "ssh-config", Value: "~/.ssh/config", Usage: "OpenSSH client config to honour (Host aliases, HostName, User, Port, IdentityFile, ProxyJump)"},
		&cli.IntFlag{Name: "parallel", Value: 32, Usage: "how many nodes to work on at once"},
		&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "limit for each remote command (0: none)"},
		&cli.DurationFlag{Name: "connect-timeout", Value: 10 * time.Second, Usage: "limit for connecting and authenticating (emulated or overloaded labs may need a minute)", EnvVars: []string{"K8SLAB_CONNECT_TIMEOUT"}},
	), categorized(catOutput,
		&cli.StringFlag{Name: "output", Value: "text", Usage: "text | json"},
		&cli.StringFlag{Name: "log-dir", Value: defaultLogDir(), Usage: "per-run logs go to `DIR`/<timestamp>/<host>.log", EnvVars: []string{"K8SLAB_LOG_DIR"}},
	)...)
}

func defaultLogDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "k8slab", "runs")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "state", "k8slab", "runs")
}

// session is everything a node command needs, built and checked before
// any connection is made: bad input never touches a node.
type session struct {
	pool    *ssh.Pool
	hosts   []host.Host
	clients []*ssh.Client
	runner  *run.Runner
	json    bool
	// The run lock: this process as its holder, and how to let go of it
	// on the nodes and on this workstation.
	me          lock.Holder
	lockOpts    lock.Options
	unlock      func(context.Context) error
	unlockLocal func()
	// recorded: the control plane holds a cluster record (recordedSession).
	recorded bool
	// command is the subcommand, for messages.
	command string
}

// lock takes the run lock on every node (commands that change nodes);
// Close releases it. A holder that is this workstation's dead process
// (a killed run) is taken over with a note; a live one is exit code 4.
func (s *session) lock(ctx context.Context, command string, force bool) error {
	if err := s.lockLocal(command, force); err != nil {
		return err
	}
	return s.lockNodes(ctx)
}

// lockLocal takes this workstation's copy of the lock, which needs no
// connection: a second run from here is refused before it does any work
// (install still has a bundle to verify and every node to reach).
func (s *session) lockLocal(command string, force bool) error {
	id := make([]byte, 8)
	rand.Read(id)
	ws, _ := os.Hostname()
	status := s.runner.StatusWriter()
	s.me = lock.Me(hex.EncodeToString(id), command, time.Now())
	s.lockOpts = lock.Options{
		Force: force,
		Alive: lock.LocalAlive(ws),
		Stale: func(node string, h lock.Holder) {
			fmt.Fprintf(status, "%s: taking over the lock of a run that is gone: %s\n", node, h)
		},
	}
	var nodes []string
	for _, h := range s.hosts {
		nodes = append(nodes, h.Name())
	}
	release, err := lock.AcquireLocal(lock.LocalDir(), nodes, s.me, s.lockOpts)
	if err != nil {
		return lockExit(err)
	}
	s.unlockLocal = release
	return nil
}

// lockNodes takes the lock on every node, after lockLocal.
func (s *session) lockNodes(ctx context.Context) error {
	if err := s.guardLab(); err != nil {
		return err
	}
	start := time.Now()
	release, err := lock.Acquire(ctx, s.hosts, s.me, s.lockOpts)
	if err != nil {
		return lockExit(err)
	}
	s.unlock = release
	fmt.Fprintf(s.runner.StatusWriter(), "run lock taken on %d nodes in %s\n", len(s.hosts), time.Since(start).Round(time.Millisecond))
	return nil
}

func lockExit(err error) error {
	var held *lock.HeldError
	if errors.As(err, &held) {
		return &exitError{exitLocked, err}
	}
	return &exitError{exitFailed, err}
}

// names maps each node's address to the name its transport uses.
func (s *session) names() map[string]string {
	names := map[string]string{}
	for _, cl := range s.clients {
		names[cl.Target().Host] = cl.Name()
	}
	return names
}

// abandon closes a session that found bad input after it opened: the
// run did nothing, so it leaves no run directory either.
func (s *session) abandon() {
	s.Close()
	if s.runner != nil && s.runner.RunDir() != "" {
		os.RemoveAll(s.runner.RunDir())
	}
}

func (s *session) Close() {
	if s.unlock != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := s.unlock(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "warning: %v\n", err)
		}
		cancel()
	}
	if s.unlockLocal != nil {
		s.unlockLocal()
	}
	if s.runner != nil {
		s.runner.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
}

// openNodeSession is openSession for the commands that work node by node
// on --nodes (exec, facts): the lab guard runs before any connection.
func openNodeSession(c *cli.Context, command string) (*session, error) {
	s, err := openSession(c, command, c.String("nodes"))
	if err != nil {
		return nil, err
	}
	if err := s.guardLab(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// openSession checks the connection flags and opens a session to nodes,
// a comma list as --nodes takes (install and reset pass the cluster's,
// which a cluster file or record may supply instead of the flag).
func openSession(c *cli.Context, command, nodes string) (*session, error) {
	out := c.String("output")
	if out != "text" && out != "json" {
		return nil, badInput("--output: %q is not text or json", out)
	}
	if c.Int("parallel") < 1 {
		return nil, badInput("--parallel: must be at least 1, got %d", c.Int("parallel"))
	}
	if nodes == "" {
		return nil, badInput("--nodes: no nodes given")
	}
	targets, err := ssh.ParseTargets(nodes)
	if err != nil {
		return nil, badInput("--nodes: %v", err)
	}
	policy, err := ssh.ParseHostKeyPolicy(c.String("host-key-policy"))
	if err != nil {
		return nil, badInput("%v", err)
	}
	if j := c.String("jump"); j != "" {
		if _, err := ssh.ParseTarget(j); err != nil {
			return nil, badInput("--jump: %v", err)
		}
	}
	sshCfg, err := ssh.LoadSSHConfig(c.String("ssh-config"))
	if err != nil {
		return nil, badInput("--ssh-config: %v", err)
	}
	password := c.String("password")
	if c.Bool("ask-password") {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return nil, badInput("--ask-password: standard input is not a terminal (use K8SLAB_SSH_PASSWORD in scripts)")
		}
		fmt.Fprint(os.Stderr, "SSH password: ")
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return nil, badInput("--ask-password: %v", err)
		}
		password = string(b)
	}
	red := &run.Redactor{}
	red.Add(password, os.Getenv("K8SLAB_SSH_KEY_PASSPHRASE"))

	opts := ssh.Options{
		User:           c.String("user"),
		UserSet:        c.IsSet("user"),
		KeyFiles:       expandAll(c.StringSlice("ssh-key")),
		Password:       password,
		Passphrase:     passphraseFunc(red),
		Jump:           c.String("jump"),
		KnownHostsFile: expand(c.String("known-hosts")),
		HostKeyPolicy:  policy,
		SSHConfig:      sshCfg,
		DialTimeout:    c.Duration("connect-timeout"),
		CommandTimeout: c.Duration("timeout"),
	}
	pool, err := ssh.NewPool(opts)
	if err != nil {
		return nil, badInput("--ssh-key/--known-hosts: %v", err)
	}
	s := &session{pool: pool, json: out == "json", command: command}
	for _, t := range targets {
		cl, err := pool.Host(t)
		if err != nil {
			s.Close()
			return nil, badInput("--nodes: %v", err)
		}
		s.clients = append(s.clients, cl)
		s.hosts = append(s.hosts, cl)
	}
	s.runner, err = run.New(run.Options{
		Command:  command,
		Parallel: c.Int("parallel"),
		LogDir:   expand(c.String("log-dir")),
		Status:   os.Stderr,
		Live:     term.IsTerminal(int(os.Stderr.Fd())) && !s.json,
		Redactor: red,
	}, s.hosts)
	if err != nil {
		s.Close()
		return nil, badInput("--log-dir: %v", err)
	}
	return s, nil
}

// dialAll opens every node's connection at once. Dialled on first use,
// the control plane's (for the record) and then the others' (for the
// lock) came one after the other: 13.7 s + 9.8 s before one run's
// reinstall's first phase. A node that cannot be reached here is
// reported by whatever uses it next.
func (s *session) dialAll(ctx context.Context) error {
	if err := s.guardLab(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, cl := range s.clients {
		wg.Go(func() { cl.Connect(ctx) })
	}
	wg.Wait()
	return nil
}

// recordReached adds a "connect" step to the report of a command that
// works through the API server and a few nodes' files (verify,
// kubeconfig): hosts lists the nodes it needs (nil: all), whose lines
// then say whether they were reached; the others say no step ran there.
func (s *session) recordReached(ctx context.Context, hosts []string) {
	byName := map[string]*ssh.Client{}
	for _, cl := range s.clients {
		byName[cl.Name()] = cl
	}
	s.runner.Run(ctx, run.Step{Name: "connect", Hosts: hosts, Do: func(ctx context.Context, t *run.Task) error {
		return byName[t.Host.Name()].Connect(ctx)
	}})
}

// guardLab refuses, before the first connection, a node that is one of a
// lab's addresses while this process is outside that lab's namespaces:
// the connection would leave this machine by its default route.
func (s *session) guardLab() error {
	outside := topology.OutsideLabs(topology.DefaultStateRoot)
	for _, cl := range s.clients {
		addr := cl.Target().Host
		if lab := outside(addr); lab != "" {
			return badInput("--nodes: %s is a node of the lab %s, whose addresses exist only in its network namespaces: run k8slab lab exec -- k8slab %s ... (from here the connection would leave this machine)", addr, lab, s.command)
		}
	}
	return nil
}

// oneShot is a command's only step on each node: it connects (a step of
// its own would hold every node's connection until all are done), does
// its work and hangs up, freeing the connection for the next nodes.
// Holding 200 open until the end cost exec a fifth more page faults and
// almost twice the context switches.
func oneShot(s run.Step) run.Step {
	do := s.Do
	s.Do = func(ctx context.Context, t *run.Task) error {
		if c, ok := t.Host.(io.Closer); ok {
			defer c.Close()
		}
		return do(ctx, t)
	}
	return s
}

// finish prints the report and turns failures into the exit code; runErr
// is the run's own error (nil when it succeeded), so the report, the
// summary line and the exit code always agree.
func (s *session) finish(data map[string]map[string]any, runErr error, text func()) error {
	rep := s.runner.Report(data, runErr)
	s.runner.Close()
	if s.json {
		if err := s.runner.WriteJSON(os.Stdout, rep); err != nil {
			return err
		}
		reportWritten.Store(true)
	} else {
		if text != nil {
			text()
		}
		s.runner.WriteSummary(os.Stdout, rep)
	}
	switch {
	case runErr != nil:
		return &exitError{exitFailed, runErr}
	case !rep.OK:
		return &exitError{exitFailed, errors.New("failed on one or more nodes (see above)")}
	}
	return nil
}

// passphraseFunc asks on the terminal, or takes K8SLAB_SSH_KEY_PASSPHRASE;
// with neither, encrypted keys fail clearly instead of hanging a script.
func passphraseFunc(red *run.Redactor) func(string) ([]byte, error) {
	if p := os.Getenv("K8SLAB_SSH_KEY_PASSPHRASE"); p != "" {
		return func(string) ([]byte, error) { return []byte(p), nil }
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil
	}
	return func(path string) ([]byte, error) {
		fmt.Fprintf(os.Stderr, "Passphrase for %s: ", path)
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(os.Stderr)
		red.Add(string(b))
		return b, err
	}
}

func expand(p string) string {
	if len(p) > 1 && p[:2] == "~/" {
		home, _ := os.UserHomeDir()
		return filepath.Join(home, p[2:])
	}
	return p
}

func expandAll(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = expand(p)
	}
	return out
}
