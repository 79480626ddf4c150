package ssh

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/kevinburke/ssh_config"
)

// Target is one node as the user wrote it: [user@]host[:port].
type Target struct {
	User string
	Host string
	Port int // 0: not given
}

func (t Target) String() string {
	s := t.Host
	if t.Port != 0 {
		s = net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	}
	if t.User != "" {
		s = t.User + "@" + s
	}
	return s
}

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
var userRE = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*\$?$`)

// ParseTarget parses [user@]host[:port]; IPv6 literals go in brackets.
func ParseTarget(s string) (Target, error) {
	var t Target
	s = strings.TrimSpace(s)
	if s == "" {
		return t, fmt.Errorf("empty node address")
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		t.User, s = s[:i], s[i+1:]
		if !userRE.MatchString(t.User) {
			return t, fmt.Errorf("node %q: invalid user name %q", s, t.User)
		}
	}
	host := s
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return t, fmt.Errorf("node %q: %v", s, err)
		}
		port, err := strconv.Atoi(p)
		if err != nil || port < 1 || port > 65535 {
			return t, fmt.Errorf("node %q: invalid port %q", s, p)
		}
		host, t.Port = h, port
	}
	if net.ParseIP(host) == nil && !hostnameRE.MatchString(host) {
		return t, fmt.Errorf("node %q: not an IP address or hostname", s)
	}
	if looksLikeBadIPv4(host) {
		return t, fmt.Errorf("node %q: invalid IPv4 address", s)
	}
	t.Host = host
	return t, nil
}

// looksLikeBadIPv4 catches "172.31.3.311": it passes the hostname grammar,
// but nobody means a DNS name made only of digits and dots.
func looksLikeBadIPv4(h string) bool {
	return strings.Trim(h, "0123456789.") == "" && net.ParseIP(h) == nil
}

// ParseTargets parses a comma-separated node list and refuses duplicates,
// so a typo never runs a step twice on one machine.
func ParseTargets(list string) ([]Target, error) {
	var out []Target
	seen := map[string]bool{}
	for _, f := range strings.Split(list, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		t, err := ParseTarget(f)
		if err != nil {
			return nil, err
		}
		key := net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
		if seen[key] {
			return nil, fmt.Errorf("node %q is listed twice", t.Host)
		}
		seen[key] = true
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no nodes given (--nodes)")
	}
	return out, nil
}

// Endpoint is a target after ~/.ssh/config and flags are applied: what is
// actually dialled.
type Endpoint struct {
	Name      string // as given by the user; used in messages and logs
	Addr      string // host:port to dial
	User      string
	KeyFiles  []string
	keysGiven bool // the key list came from a flag or IdentityFile: a missing one is an error
	Jump      string
}

// resolve applies the precedence OpenSSH users expect: what is written in
// the node spec, then explicit flags, then ~/.ssh/config, then defaults.
func resolve(t Target, o *Options) (Endpoint, error) {
	ep := Endpoint{Name: t.Host}
	if t.User != "" || t.Port != 0 {
		ep.Name = t.String()
	}
	get := func(key string) string {
		if o.SSHConfig == nil {
			return ""
		}
		v, _ := o.SSHConfig.Get(t.Host, key)
		return v
	}
	hostname := t.Host
	if v := get("HostName"); v != "" {
		hostname = strings.ReplaceAll(v, "%h", t.Host)
	}
	port := t.Port
	if port == 0 {
		if v := get("Port"); v != "" {
			p, err := strconv.Atoi(v)
			if err != nil {
				return ep, fmt.Errorf("ssh config: host %s: invalid Port %q", t.Host, v)
			}
			port = p
		}
	}
	if port == 0 {
		port = 22
	}
	ep.Addr = net.JoinHostPort(hostname, strconv.Itoa(port))

	switch {
	case t.User != "":
		ep.User = t.User
	case o.UserSet && o.User != "":
		ep.User = o.User
	case get("User") != "":
		ep.User = get("User")
	case o.User != "":
		ep.User = o.User
	default:
		ep.User = "root"
	}

	switch {
	case len(o.KeyFiles) > 0:
		ep.KeyFiles, ep.keysGiven = o.KeyFiles, true
	default:
		var ids []string
		if o.SSHConfig != nil {
			ids, _ = o.SSHConfig.GetAll(t.Host, "IdentityFile")
		}
		if len(ids) > 0 {
			ep.keysGiven = true
			for _, id := range ids {
				ep.KeyFiles = append(ep.KeyFiles, expandHome(id))
			}
		} else {
			home, _ := os.UserHomeDir()
			for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
				ep.KeyFiles = append(ep.KeyFiles, filepath.Join(home, ".ssh", n))
			}
		}
	}

	switch {
	case o.Jump != "":
		ep.Jump = o.Jump
	case get("ProxyJump") != "" && !strings.EqualFold(get("ProxyJump"), "none"):
		// OpenSSH allows a chain; one hop is what labs use and what we support.
		ep.Jump = strings.Split(get("ProxyJump"), ",")[0]
	}
	return ep, nil
}

func expandHome(p string) string {
	if strings.HasPrefix(p, "~/") {
		home, _ := os.UserHomeDir()
		return filepath.Join(home, p[2:])
	}
	return p
}

// LoadSSHConfig reads an ssh_config file; a missing file is not an error,
// since most lab users have none.
func LoadSSHConfig(path string) (*ssh_config.Config, error) {
	f, err := os.Open(expandHome(path))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg, err := ssh_config.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}
