package ssh

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// keyring parses each private key once per run and asks for a passphrase at
// most once, however many nodes use the key.
type keyring struct {
	passphrase func(path string) ([]byte, error)
	mu         sync.Mutex
	keys       map[string]keyResult
	agentOnce  sync.Once
	agent      agent.ExtendedAgent
}

type keyResult struct {
	signer xssh.Signer
	err    error
}

// errSkipKey marks a default key that cannot be used non-interactively:
// OpenSSH skips those silently, and so do we.
var errSkipKey = errors.New("skipped")

func (k *keyring) signer(path string, given bool) (xssh.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if r, ok := k.keys[path]; ok {
		return r.signer, r.err
	}
	s, err := k.load(path, given)
	k.keys[path] = keyResult{s, err}
	return s, err
}

func (k *keyring) load(path string, given bool) (xssh.Signer, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		if !given && os.IsNotExist(err) {
			return nil, errSkipKey
		}
		return nil, fmt.Errorf("ssh key %s: %w", path, err)
	}
	s, err := xssh.ParsePrivateKey(pem)
	var missing *xssh.PassphraseMissingError
	if errors.As(err, &missing) {
		if k.passphrase == nil {
			if !given {
				return nil, errSkipKey
			}
			return nil, fmt.Errorf("ssh key %s is encrypted and this run cannot ask for its passphrase: set K8SLAB_SSH_KEY_PASSPHRASE, run on a terminal, or load the key into ssh-agent", path)
		}
		pass, perr := k.passphrase(path)
		if perr != nil {
			return nil, fmt.Errorf("ssh key %s: passphrase: %w", path, perr)
		}
		s, err = xssh.ParsePrivateKeyWithPassphrase(pem, pass)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh key %s: %w", path, err)
	}
	return s, nil
}

// agentSigners returns the keys of the running ssh-agent, if any. A broken
// SSH_AUTH_SOCK is not fatal: key files and passwords may still work.
func (k *keyring) agentSigners() []xssh.Signer {
	k.agentOnce.Do(func() {
		sock := os.Getenv("SSH_AUTH_SOCK")
		if sock == "" {
			return
		}
		c, err := net.Dial("unix", sock)
		if err != nil {
			return
		}
		k.agent = agent.NewClient(c)
	})
	if k.agent == nil {
		return nil
	}
	s, err := k.agent.Signers()
	if err != nil {
		return nil
	}
	return s
}

// authFor builds the methods in OpenSSH's order: agent, key files, password,
// keyboard-interactive. It also returns a description for auth errors, so
// "permission denied" says what was actually tried.
func (k *keyring) authFor(ep Endpoint, password string) ([]xssh.AuthMethod, string, error) {
	signers := k.agentSigners()
	nAgent := len(signers)
	for _, p := range ep.KeyFiles {
		s, err := k.signer(p, ep.keysGiven)
		if errors.Is(err, errSkipKey) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		signers = append(signers, s)
	}
	var methods []xssh.AuthMethod
	var tried []string
	if len(signers) > 0 {
		methods = append(methods, xssh.PublicKeys(signers...))
		tried = append(tried, fmt.Sprintf("publickey (%d from agent, %d key files)", nAgent, len(signers)-nAgent))
	}
	if password != "" {
		methods = append(methods, xssh.Password(password))
		// Answer hidden prompts with the password once: when the server
		// asks again, the password was refused, and every retry costs a
		// PAM failure delay.
		answered := false
		methods = append(methods, xssh.KeyboardInteractive(func(_, _ string, qs []string, echos []bool) ([]string, error) {
			ans := make([]string, len(qs))
			for i := range qs {
				if !echos[i] {
					if answered {
						return nil, errors.New("password refused")
					}
					ans[i] = password
					answered = true
				}
			}
			return ans, nil
		}))
		tried = append(tried, "password", "keyboard-interactive")
	}
	if len(methods) == 0 {
		return nil, "", fmt.Errorf("no SSH credentials: no agent, none of %s exists, and no password (--ssh-key, --password or --ask-password)", strings.Join(ep.KeyFiles, ", "))
	}
	return methods, strings.Join(tried, ", "), nil
}
