package ssh

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	xssh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeyPolicy mirrors OpenSSH's StrictHostKeyChecking.
type HostKeyPolicy string

const (
	Strict    HostKeyPolicy = "strict"
	AcceptNew HostKeyPolicy = "accept-new"
	// Insecure must be asked for by name: it disables MITM protection.
	Insecure HostKeyPolicy = "insecure"
)

// ParseHostKeyPolicy refuses anything but the three names, so a typo can
// never fall through to "insecure".
func ParseHostKeyPolicy(s string) (HostKeyPolicy, error) {
	switch p := HostKeyPolicy(s); p {
	case Strict, AcceptNew, Insecure:
		return p, nil
	}
	return "", fmt.Errorf("--host-key-policy: %q is not one of strict, accept-new, insecure", s)
}

// HostKeyChangedError is the one host-key failure no policy overrides.
type HostKeyChangedError struct {
	Host    string
	Got     xssh.PublicKey
	File    string
	Line    int
	WantKey xssh.PublicKey
}

func (e *HostKeyChangedError) Error() string {
	return fmt.Sprintf("REMOTE HOST KEY CHANGED for %s: it sent %s %s, but %s:%d holds %s %s; if the node was reinstalled, remove that line (ssh-keygen -R %s -f %s)",
		e.Host, e.Got.Type(), xssh.FingerprintSHA256(e.Got), e.File, e.Line,
		e.WantKey.Type(), xssh.FingerprintSHA256(e.WantKey), e.Host, e.File)
}

// hostKeys checks and records host keys in one known_hosts file.
type hostKeys struct {
	policy HostKeyPolicy
	file   string

	mu    sync.Mutex
	db    xssh.HostKeyCallback
	added map[string]xssh.PublicKey // accepted during this run, not yet in db
}

func newHostKeys(policy HostKeyPolicy, file string) (*hostKeys, error) {
	h := &hostKeys{policy: policy, file: file, added: map[string]xssh.PublicKey{}}
	if policy == Insecure {
		return h, nil
	}
	if _, err := os.Stat(file); os.IsNotExist(err) {
		if policy == Strict {
			return nil, fmt.Errorf("known hosts file %s does not exist (policy strict)", file)
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			return nil, err
		}
	}
	db, err := knownhosts.New(file)
	if err != nil {
		return nil, fmt.Errorf("known hosts %s: %w", file, err)
	}
	h.db = db
	return h, nil
}

// algorithms lists the key types known_hosts holds for addr. Offering only
// those makes a server with several host keys present the recorded one,
// instead of a different type that would look like a changed key.
func (h *hostKeys) algorithms(addr string) []string {
	if h.policy == Insecure {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var keys []xssh.PublicKey
	if k, ok := h.added[knownhosts.Normalize(addr)]; ok {
		keys = append(keys, k)
	}
	var ke *knownhosts.KeyError
	if err := h.db(addr, dummyAddr(addr), probeKey{}); errors.As(err, &ke) {
		for _, w := range ke.Want {
			keys = append(keys, w.Key)
		}
	}
	var algos []string
	for _, k := range keys {
		algos = append(algos, algorithmsFor(k.Type())...)
	}
	return algos
}

func algorithmsFor(keyType string) []string {
	if keyType == xssh.KeyAlgoRSA {
		return []string{xssh.KeyAlgoRSASHA512, xssh.KeyAlgoRSASHA256, xssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

func (h *hostKeys) callback(name string) xssh.HostKeyCallback {
	if h.policy == Insecure {
		return xssh.InsecureIgnoreHostKey()
	}
	return func(addr string, remote net.Addr, key xssh.PublicKey) error {
		h.mu.Lock()
		defer h.mu.Unlock()
		norm := knownhosts.Normalize(addr)
		if k, ok := h.added[norm]; ok {
			if string(k.Marshal()) == string(key.Marshal()) {
				return nil
			}
			return &HostKeyChangedError{Host: name, Got: key, File: h.file, WantKey: k}
		}
		err := h.db(addr, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &ke) && len(ke.Want) > 0:
			w := ke.Want[0]
			return &HostKeyChangedError{Host: name, Got: key, File: w.Filename, Line: w.Line, WantKey: w.Key}
		case errors.As(err, &ke) && h.policy == AcceptNew:
			f, ferr := os.OpenFile(h.file, os.O_APPEND|os.O_WRONLY, 0o600)
			if ferr != nil {
				return fmt.Errorf("recording host key of %s: %w", name, ferr)
			}
			defer f.Close()
			if _, ferr := fmt.Fprintln(f, knownhosts.Line([]string{norm}, key)); ferr != nil {
				return fmt.Errorf("recording host key of %s: %w", name, ferr)
			}
			h.added[norm] = key
			return nil
		case errors.As(err, &ke):
			return fmt.Errorf("host key of %s (%s %s) is not in %s and the policy is strict: add it (ssh-keyscan) or use --host-key-policy accept-new",
				name, key.Type(), xssh.FingerprintSHA256(key), h.file)
		default:
			return fmt.Errorf("host key of %s: %w", name, err)
		}
	}
}

// probeKey never matches a real key: asking knownhosts about it returns the
// recorded keys for a host.
type probeKey struct{}

func (probeKey) Type() string                         { return "k8slab-probe" }
func (probeKey) Marshal() []byte                      { return []byte("k8slab-probe") }
func (probeKey) Verify([]byte, *xssh.Signature) error { return errors.New("probe") }

// dummyAddr avoids a DNS lookup: for a hostname, only the name is checked.
func dummyAddr(addr string) net.Addr {
	h, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(h); ip != nil {
		return &net.TCPAddr{IP: ip, Port: 22}
	}
	return &net.TCPAddr{}
}
