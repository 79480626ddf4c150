package ssh_test

// Integration tests: real OpenSSH servers in the namespace lab, reached
// from the workstation namespace across the BIRD-routed fabric.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/ssh"
	"github.com/k8slab/k8slab/topology"
	"github.com/k8slab/k8slab/topology/labtest"
	xssh "golang.org/x/crypto/ssh"
)

// isolate keeps the developer's own agent and ~/.ssh out of the tests.
func isolate(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	t.Setenv("HOME", t.TempDir())
}

func labOptions(t *testing.T, lab *topology.Lab) ssh.Options {
	isolate(t)
	return ssh.Options{
		KeyFiles:       []string{lab.KeyFile()},
		KnownHostsFile: filepath.Join(t.TempDir(), "known_hosts"),
		HostKeyPolicy:  ssh.AcceptNew,
		Dial:           lab.Dialer().DialContext,
		DialTimeout:    5 * time.Second,
		CommandTimeout: 20 * time.Second,
	}
}

func clients(t *testing.T, o ssh.Options, nodes ...string) (*ssh.Pool, []*ssh.Client) {
	t.Helper()
	p, err := ssh.NewPool(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	var cs []*ssh.Client
	for _, n := range nodes {
		tg, err := ssh.ParseTarget(n)
		if err != nil {
			t.Fatal(err)
		}
		c, err := p.Host(tg)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	return p, cs
}

// parallel runs fn on every client at once and returns the errors by index.
func parallel(cs []*ssh.Client, fn func(c *ssh.Client) error) []error {
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(c)
		}()
	}
	wg.Wait()
	return errs
}

var nodeNames = map[string]string{
	"172.31.3.11": "kube-node1", "172.31.3.12": "kube-node2",
	"172.31.4.11": "kube-node3", "172.31.4.12": "kube-node4",
}

func TestLabAcceptNewThenVerifyAndReuse(t *testing.T) {
	lab := labtest.Up(t)
	ctx := context.Background()
	o := labOptions(t, lab)
	_, cs := clients(t, o, lab.Spec.NodeAddrs()...)
	errs := parallel(cs, func(c *ssh.Client) error {
		for i := 0; i < 3; i++ {
			out, err := host.Output(ctx, c, "uname -n")
			if err != nil {
				return err
			}
			if got := strings.TrimSpace(out); got != nodeNames[c.Name()] {
				return fmt.Errorf("hostname %q, want %q", got, nodeNames[c.Name()])
			}
		}
		data := bytes.Repeat([]byte("k8slab"), 1<<16)
		if err := c.Upload(ctx, host.File{Path: "/tmp/" + lab.Spec.Name + "/probe.bin", Mode: 0o750}, bytes.NewReader(data)); err != nil {
			return err
		}
		back, err := c.ReadFile(ctx, "/tmp/"+lab.Spec.Name+"/probe.bin")
		if err != nil || !bytes.Equal(back, data) {
			return fmt.Errorf("read back %d bytes, err %v", len(back), err)
		}
		if c.Dials() != 1 {
			return fmt.Errorf("%d connections for 3 commands, an upload and a read: want 1 reused", c.Dials())
		}
		return nil
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", cs[i].Name(), err)
		}
	}
	os.RemoveAll("/tmp/" + lab.Spec.Name)
	kh, _ := os.ReadFile(o.KnownHostsFile)
	if n := strings.Count(string(kh), "\n"); n != 4 {
		t.Fatalf("accept-new recorded %d keys, want 4:\n%s", n, kh)
	}
	// A second run, now strict, verifies against what was recorded.
	o.HostKeyPolicy = ssh.Strict
	_, cs = clients(t, o, lab.Spec.NodeAddrs()...)
	for i, err := range parallel(cs, func(c *ssh.Client) error { return c.Connect(ctx) }) {
		if err != nil {
			t.Errorf("strict re-run %s: %v", cs[i].Name(), err)
		}
	}
	if kh2, _ := os.ReadFile(o.KnownHostsFile); !bytes.Equal(kh, kh2) {
		t.Errorf("known_hosts changed on a verifying run")
	}
}

func TestLabChangedHostKeyRefused(t *testing.T) {
	lab := labtest.Up(t)
	ctx := context.Background()
	o := labOptions(t, lab)
	_, cs := clients(t, o, lab.Spec.NodeAddrs()...)
	for _, err := range parallel(cs, func(c *ssh.Client) error { return c.Connect(ctx) }) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := lab.RestartSSH(ctx, "kube-node2", topology.SSHRestart{NewHostKey: true}); err != nil {
		t.Fatal(err)
	}
	// accept-new must still refuse a CHANGED key; the other nodes go on.
	_, cs = clients(t, o, lab.Spec.NodeAddrs()...)
	errs := parallel(cs, func(c *ssh.Client) error { _, err := host.Output(ctx, c, "true"); return err })
	for i, err := range errs {
		if cs[i].Name() != "172.31.3.12" {
			if err != nil {
				t.Errorf("%s: %v", cs[i].Name(), err)
			}
			continue
		}
		var changed *ssh.HostKeyChangedError
		if !errors.As(err, &changed) {
			t.Fatalf("node2 with a new host key: got %v, want HostKeyChangedError", err)
		}
		// Connect order decides which line node2's key is on.
		kh, _ := os.ReadFile(o.KnownHostsFile)
		line := 0
		for i, l := range strings.Split(string(kh), "\n") {
			if strings.HasPrefix(l, "172.31.3.12 ") {
				line = i + 1
			}
		}
		msg := err.Error()
		for _, want := range []string{"REMOTE HOST KEY CHANGED", "172.31.3.12", "SHA256:", fmt.Sprintf("%s:%d ", o.KnownHostsFile, line), "ssh-keygen -R"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q lacks %q", msg, want)
			}
		}
	}
}

func TestLabWrongKeyNamesHost(t *testing.T) {
	lab := labtest.Up(t)
	o := labOptions(t, lab)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, _ := xssh.MarshalPrivateKey(priv, "stranger")
	o.KeyFiles = []string{filepath.Join(t.TempDir(), "id_ed25519")}
	os.WriteFile(o.KeyFiles[0], pem.EncodeToMemory(blk), 0o600)
	_, cs := clients(t, o, "172.31.4.11")
	err := cs[0].Connect(context.Background())
	if err == nil || !strings.Contains(err.Error(), "authentication failed for root@172.31.4.11") {
		t.Fatalf("got %v, want an authentication error naming root@172.31.4.11", err)
	}
}

func TestLabPasswordAndKeyboardInteractive(t *testing.T) {
	lab := labtest.Up(t)
	ctx := context.Background()
	// kube-node3 offers keyboard-interactive only: proves that path too.
	if err := lab.RestartSSH(ctx, "kube-node3", topology.SSHRestart{Options: []string{"PasswordAuthentication=no"}}); err != nil {
		t.Fatal(err)
	}
	o := labOptions(t, lab)
	o.KeyFiles = nil // defaults under the empty test $HOME: none exist
	o.Password = lab.Spec.Login.RootPassword
	_, cs := clients(t, o, "172.31.3.11", "172.31.4.11")
	for i, err := range parallel(cs, func(c *ssh.Client) error {
		out, err := host.Output(ctx, c, "id -u")
		if err == nil && strings.TrimSpace(out) != "0" {
			err = fmt.Errorf("id -u = %q", out)
		}
		return err
	}) {
		if err != nil {
			t.Errorf("%s: %v", cs[i].Name(), err)
		}
	}
	o.Password = "wrong"
	_, cs = clients(t, o, "172.31.3.11")
	if err := cs[0].Connect(ctx); err == nil || !strings.Contains(err.Error(), "password") {
		t.Errorf("wrong password: %v", err)
	}
}

func TestLabNonRootUsersBecomeRoot(t *testing.T) {
	lab := labtest.Up(t)
	ctx := context.Background()
	o := labOptions(t, lab)
	o.Password = "labuser"
	_, cs := clients(t, o, "labadmin@172.31.3.12", "labuser@172.31.4.12")
	for i, err := range parallel(cs, func(c *ssh.Client) error {
		out, err := host.Output(ctx, c, `echo "$(id -u) $SUDO_USER"; cat`)
		if err != nil {
			return err
		}
		user := strings.SplitN(c.Name(), "@", 2)[0]
		if strings.TrimSpace(out) != "0 "+user {
			return fmt.Errorf("got %q, want root via sudo from %s", out, user)
		}
		// stdin reaches the command, and the sudo password does not.
		var so bytes.Buffer
		if err := c.Run(ctx, host.Cmd{Command: "cat", Stdin: strings.NewReader("payload\n"), Stdout: &so}); err != nil {
			return err
		}
		if so.String() != "payload\n" {
			return fmt.Errorf("stdin through sudo: %q", so.String())
		}
		// Root-only places: upload into one, read a root-only file.
		// Lab nodes share the host's filesystem: one path per user.
		p := "/root/.k8slab-test-" + lab.Spec.Name + "-" + user
		if err := c.Upload(ctx, host.File{Path: p, Mode: 0o600}, strings.NewReader("x")); err != nil {
			return err
		}
		defer host.Output(ctx, c, "rm -f "+p)
		st, err := host.Output(ctx, c, "stat -c '%a %U' "+p)
		if err != nil || strings.TrimSpace(st) != "600 root" {
			return fmt.Errorf("uploaded file: %q %v", st, err)
		}
		if _, err := c.ReadFile(ctx, "/etc/shadow"); err != nil {
			return err
		}
		return nil
	}) {
		if err != nil {
			t.Errorf("%s: %v", cs[i].Name(), err)
		}
	}
	// The password-sudo user without a password is refused at connect,
	// with sudo's reason, before any step runs.
	o.Password = ""
	_, cs = clients(t, o, "labuser@172.31.4.12")
	if err := cs[0].Connect(ctx); err == nil || !strings.Contains(err.Error(), "sudo: a password is required") {
		t.Errorf("labuser without password: %v", err)
	}
}

func TestLabJumpHost(t *testing.T) {
	lab := labtest.Up(t)
	ctx := context.Background()
	// Without its route to the fabric the workstation reaches only the
	// spine: every node connection must go through the jump host.
	if _, err := lab.Run(ctx, topology.WorkstationName, "ip route del 172.31.0.0/16"); err != nil {
		t.Fatal(err)
	}
	o := labOptions(t, lab)
	o.Jump = "root@172.31.0.2"
	_, cs := clients(t, o, lab.Spec.NodeAddrs()...)
	for i, err := range parallel(cs, func(c *ssh.Client) error {
		out, err := host.Output(ctx, c, `echo $SSH_CONNECTION`)
		if err != nil {
			return err
		}
		from := strings.Fields(out)[0]
		if from != "172.31.1.1" && from != "172.31.2.1" {
			return fmt.Errorf("connection came from %s, want the spine", from)
		}
		return nil
	}) {
		if err != nil {
			t.Errorf("%s: %v", cs[i].Name(), err)
		}
	}
}

func TestLabSSHConfigAlias(t *testing.T) {
	lab := labtest.Up(t)
	o := labOptions(t, lab)
	cfgText := fmt.Sprintf("Host rack2-a\n  HostName 172.31.4.11\n  User labadmin\n  IdentityFile %s\n", lab.KeyFile())
	cfgPath := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfgPath, []byte(cfgText), 0o600)
	cfg, err := ssh.LoadSSHConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	o.SSHConfig, o.KeyFiles = cfg, nil
	_, cs := clients(t, o, "rack2-a")
	out, err := host.Output(context.Background(), cs[0], `echo "$(uname -n) $SUDO_USER"`)
	if err != nil || strings.TrimSpace(out) != "kube-node3 labadmin" {
		t.Fatalf("alias rack2-a: %q %v", out, err)
	}
}

func TestLabLinkCutTimesOut(t *testing.T) {
	lab := labtest.Up(t)
	ctx := context.Background()
	o := labOptions(t, lab)
	// 1 s of work against a 6 s limit: only the cut node may time out,
	// even on a loaded machine.
	o.CommandTimeout = 6 * time.Second
	_, cs := clients(t, o, lab.Spec.NodeAddrs()...)
	for _, err := range parallel(cs, func(c *ssh.Client) error { return c.Connect(ctx) }) {
		if err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		lab.SetLink(ctx, "kube-node2", false)
	}()
	start := time.Now()
	errs := parallel(cs, func(c *ssh.Client) error {
		_, err := host.Output(ctx, c, "sleep 1; echo done")
		return err
	})
	elapsed := time.Since(start)
	for i, err := range errs {
		if cs[i].Name() == "172.31.3.12" {
			if !errors.Is(err, ssh.ErrTimeout) {
				t.Errorf("node2 behind a cut link: got %v, want a timeout", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", cs[i].Name(), err)
		}
	}
	if elapsed > o.CommandTimeout+2*time.Second {
		t.Errorf("run took %s with a %s timeout", elapsed, o.CommandTimeout)
	}
}

func TestLabSSHDKilledMidCommand(t *testing.T) {
	lab := labtest.Up(t)
	ctx := context.Background()
	o := labOptions(t, lab)
	_, cs := clients(t, o, "172.31.4.12")
	if err := cs[0].Connect(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(500 * time.Millisecond)
		if err := lab.KillSSH("kube-node4"); err != nil {
			t.Error(err)
		}
	}()
	start := time.Now()
	_, err := host.Output(ctx, cs[0], "sleep 10")
	if !errors.Is(err, ssh.ErrConnectionLost) || !strings.Contains(err.Error(), "redial failed") {
		t.Fatalf("got %v, want a lost connection whose redial failed", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("lost connection reported after %s", d)
	}
}

func TestLabLargeUploadIsAtomicWithProgress(t *testing.T) {
	lab := labtest.Up(t)
	ctx := context.Background()
	o := labOptions(t, lab)
	o.ProgressMin = 1 << 20
	var mu sync.Mutex
	var last, calls int64
	o.Progress = func(_, _ string, done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		last = done
	}
	_, cs := clients(t, o, "172.31.3.11")
	data := make([]byte, 24<<20)
	rand.Read(data)
	dir := "/tmp/" + lab.Spec.Name + "-upload"
	defer os.RemoveAll(dir)
	if err := cs[0].Upload(ctx, host.File{Path: dir + "/big.bin", Mode: 0o755, Size: int64(len(data))}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	out, err := host.Output(ctx, cs[0], "sha256sum "+dir+"/big.bin | cut -d' ' -f1; stat -c %a "+dir+"/big.bin; ls -a "+dir+" | wc -l")
	if err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(sum[:]) + "\n755\n3\n" // ., .. and the file: no temp file left
	if out != want {
		t.Errorf("remote file: %q, want %q", out, want)
	}
	if calls == 0 || last != int64(len(data)) {
		t.Errorf("progress: %d calls, last %d of %d", calls, last, len(data))
	}
}

// cutAt reads like bytes.Reader and, the first time the transfer passes
// at, closes the connection under it.
type cutAt struct {
	*bytes.Reader
	at   int64
	cut  func()
	once sync.Once
}

func (r *cutAt) Read(b []byte) (int, error) {
	n, err := r.Reader.Read(b)
	if r.Reader.Size()-int64(r.Reader.Len()) >= r.at {
		r.once.Do(r.cut)
	}
	return n, err
}

func TestLabUploadSurvivesALostConnection(t *testing.T) {
	lab := labtest.Up(t)
	ctx := context.Background()
	o := labOptions(t, lab)
	var mu sync.Mutex
	var conns []net.Conn
	o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := lab.Dialer().DialContext(ctx, network, addr)
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return c, err
	}
	_, cs := clients(t, o, "172.31.3.12")
	data := make([]byte, 24<<20)
	rand.Read(data)
	r := &cutAt{Reader: bytes.NewReader(data), at: 8 << 20, cut: func() {
		mu.Lock()
		conns[0].Close()
		mu.Unlock()
	}}
	dir := "/tmp/" + lab.Spec.Name + "-upload-cut"
	defer os.RemoveAll(dir)
	if err := cs[0].Upload(ctx, host.File{Path: dir + "/big.bin", Mode: 0o644, Size: int64(len(data))}, r); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	out, err := host.Output(ctx, cs[0], "sha256sum "+dir+"/big.bin | cut -d' ' -f1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != hex.EncodeToString(sum[:]) {
		t.Errorf("remote file differs from what was sent")
	}
	if d := cs[0].Dials(); d != 2 {
		t.Errorf("%d connections, want 2 (the cut one and one redial)", d)
	}
}

func TestLabAgentAuth(t *testing.T) {
	lab := labtest.Up(t)
	o := labOptions(t, lab)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatal("ssh-agent socket never appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}
	add := exec.Command("ssh-add", lab.KeyFile())
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v %s", err, out)
	}
	t.Setenv("SSH_AUTH_SOCK", sock)
	o.KeyFiles = nil // only the agent holds the key
	_, cs := clients(t, o, "172.31.4.11")
	if out, err := host.Output(context.Background(), cs[0], "uname -n"); err != nil || strings.TrimSpace(out) != "kube-node3" {
		t.Fatalf("agent auth: %q %v", out, err)
	}
}

func TestLabEncryptedKey(t *testing.T) {
	lab := labtest.Up(t)
	o := labOptions(t, lab)
	pemBytes, err := os.ReadFile(lab.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := xssh.ParseRawPrivateKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := xssh.MarshalPrivateKeyWithPassphrase(raw, "lab", []byte("open sesame"))
	if err != nil {
		t.Fatal(err)
	}
	enc := filepath.Join(t.TempDir(), "id_enc")
	os.WriteFile(enc, pem.EncodeToMemory(blk), 0o600)
	o.KeyFiles = []string{enc}

	// Unattended: refused when the pool is made, before any node is dialled.
	if _, err := ssh.NewPool(o); err == nil || !strings.Contains(err.Error(), "is encrypted and this run cannot ask for its passphrase") {
		t.Fatalf("encrypted key without passphrase: %v", err)
	}
	asked := 0
	o.Passphrase = func(string) ([]byte, error) { asked++; return []byte("open sesame"), nil }
	_, cs := clients(t, o, lab.Spec.NodeAddrs()...)
	for i, err := range parallel(cs, func(c *ssh.Client) error { return c.Connect(context.Background()) }) {
		if err != nil {
			t.Errorf("%s: %v", cs[i].Name(), err)
		}
	}
	if asked != 1 {
		t.Errorf("passphrase asked %d times for 4 nodes, want once", asked)
	}
}

func TestLabUnreachableNodeConnectTimeout(t *testing.T) {
	lab := labtest.Up(t)
	ctx := context.Background()
	if err := lab.SetLink(ctx, "kube-node1", false); err != nil {
		t.Fatal(err)
	}
	o := labOptions(t, lab)
	o.DialTimeout = 2 * time.Second
	_, cs := clients(t, o, "172.31.3.11", "172.31.3.12")
	start := time.Now()
	errs := parallel(cs, func(c *ssh.Client) error { return c.Connect(ctx) })
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "connect: timed out after 2s") {
		t.Errorf("node1 behind a down link: %v", errs[0])
	}
	if errs[1] != nil {
		t.Errorf("node2: %v", errs[1])
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("took %s with a 2s connect timeout", d)
	}
}
