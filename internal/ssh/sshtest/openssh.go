package sshtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	xssh "golang.org/x/crypto/ssh"
)

// OpenSSH is a fleet of real sshd processes on loopback, one port each,
// sharing a host key and the client key.
type OpenSSH struct {
	Addrs   []string
	KeyFile string
	procs   []*exec.Cmd
}

// StartOpenSSH starts n sshd (root only: sshd wants to be root to serve
// logins) on 127.0.0.1, each with its own port and a configuration in
// dir: public-key login as the current user, no PAM, no DNS, no shell
// start-up file, so a login costs the server what OpenSSH itself needs.
func StartOpenSSH(n int, dir string) (*OpenSSH, error) {
	sshd, err := exec.LookPath("/usr/sbin/sshd")
	if err != nil {
		return nil, err
	}
	o := &OpenSSH{KeyFile: filepath.Join(dir, "id_ed25519")}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	if err := writeKey(o.KeyFile, priv); err != nil {
		return nil, err
	}
	sshPub, _ := xssh.NewPublicKey(pub)
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(auth, xssh.MarshalAuthorizedKey(sshPub), 0o600); err != nil {
		return nil, err
	}
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := writeKey(hostKey, hostPriv); err != nil {
		return nil, err
	}
	os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	// freePort's port is free only until something binds it: the kernel
	// may hand the same one out again before this port's sshd starts, and
	// two sshd on one port made the benchmark's node list repeat a node.
	used := map[int]bool{}
	for i := 0; i < n; i++ {
		port, err := freePort()
		for tries := 0; err == nil && used[port] && tries < 100; tries++ {
			port, err = freePort()
		}
		if err != nil {
			o.Close()
			return nil, err
		}
		used[port] = true
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		conf := filepath.Join(dir, fmt.Sprintf("sshd-%d.conf", i))
		cfg := strings.Join([]string{
			"ListenAddress " + addr,
			"HostKey " + hostKey,
			"AuthorizedKeysFile " + auth,
			"PidFile none", "StrictModes no", "UsePAM no", "UseDNS no", "PermitRootLogin yes",
			"PasswordAuthentication no", "KbdInteractiveAuthentication no", "PrintMotd no",
			"MaxStartups 200", "LogLevel ERROR", "",
		}, "\n")
		if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
			o.Close()
			return nil, err
		}
		// Each login runs the user's shell, and bash started by sshd reads
		// ~/.bashrc: root's on this workstation starts pyenv, whose rehash
		// lock serialized the logins for minutes. sshd runs in a private
		// mount namespace where that file is empty, so a login costs what
		// sshd and a plain shell need, as on a node; the workstation's
		// file is untouched.
		empty := filepath.Join(dir, "empty-bashrc")
		os.WriteFile(empty, nil, 0o644)
		cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
			`[ ! -e "$HOME/.bashrc" ] || mount --bind "$1" "$HOME/.bashrc" || exit 1; shift; exec "$@"`,
			"sh", empty, sshd, "-D", "-e", "-f", conf)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			o.Close()
			return nil, err
		}
		o.procs = append(o.procs, cmd)
		o.Addrs = append(o.Addrs, addr)
	}
	for _, a := range o.Addrs {
		if err := waitListening(a, 10*time.Second); err != nil {
			o.Close()
			return nil, err
		}
	}
	return o, nil
}

// Close stops every sshd.
func (o *OpenSSH) Close() {
	for _, p := range o.procs {
		p.Process.Kill()
		p.Wait()
	}
}

func writeKey(path string, k ed25519.PrivateKey) error {
	blk, err := xssh.MarshalPrivateKey(k, "sshtest")
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(blk), 0o600)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func waitListening(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd on %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
