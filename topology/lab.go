package topology

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/netns"
	xssh "golang.org/x/crypto/ssh"
)

// DefaultStateRoot holds each lab's keys, configs, logs and state file.
const DefaultStateRoot = "/run/k8slab"

// Lab is one lab description bound to its state directory.
type Lab struct {
	Spec *Spec
	Dir  string
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
	// VM, when set, boots the nodes as QEMU VMs instead of namespaces.
	VM *VMOptions
	// Container, when set, boots the nodes as systemd containers.
	Container *ContainerOptions
	// CalicoPeering, when set (the cluster's pod network), has every
	// leaf also peer with its rack's nodes as `k8slab fabric config`
	// generates it, for Calico's AS-per-rack mode.
	CalicoPeering netip.Prefix

	mu    sync.Mutex
	state labState
}

type labState struct {
	Name       string   `json:"name"`
	Namespaces []string `json:"namespaces"`
	Procs      []Proc   `json:"procs"`
	// Addrs are the members' addresses: they exist only inside the lab's
	// namespaces (OutsideLabs).
	Addrs []string `json:"addrs,omitempty"`
	// Container nodes' cgroups (one name, in every hierarchy) and
	// directories, removed by `lab down`.
	Cgroups []string `json:"cgroups,omitempty"`
	Dirs    []string `json:"dirs,omitempty"`
	// RaisedInotify: this lab raised the workstation's inotify limits
	// (k8slab before checkInotify); the last such lab down restores them.
	RaisedInotify bool `json:"raisedInotify,omitempty"`
}

// New binds spec to <root>/<name>.
func New(spec *Spec, root string) *Lab {
	if root == "" {
		root = DefaultStateRoot
	}
	return &Lab{Spec: spec, Dir: filepath.Join(root, spec.Name)}
}

func (l *Lab) logf(format string, args ...any) {
	if l.Logf != nil {
		l.Logf(format, args...)
	}
}

// NS is the network namespace name of a member; the lab name in it keeps
// two labs (a user's and a test's) apart.
func (l *Lab) NS(member string) string { return "k8slab-" + l.Spec.Name + "-" + member }

// Dialer opens connections from the workstation namespace.
func (l *Lab) Dialer() netns.Dialer {
	return netns.Dialer{Path: netns.Path(l.NS(WorkstationName))}
}

// KeyFile is the lab's private key, authorised for root and every lab user.
func (l *Lab) KeyFile() string { return filepath.Join(l.Dir, "id_ed25519") }

// KnownHostsFile is where `lab exec` points k8slab's known_hosts.
func (l *Lab) KnownHostsFile() string { return filepath.Join(l.Dir, "known_hosts") }

func (l *Lab) memberDir(m string) string { return filepath.Join(l.Dir, m) }

func (l *Lab) statePath() string { return filepath.Join(l.Dir, "state.json") }

func (l *Lab) save() error {
	b, _ := json.MarshalIndent(l.state, "", "  ")
	return os.WriteFile(l.statePath(), b, 0o644)
}

func (l *Lab) load() bool {
	b, err := os.ReadFile(l.statePath())
	if err != nil {
		return false
	}
	return json.Unmarshal(b, &l.state) == nil
}

// ip runs one iproute2 command; errors carry the command for diagnosis.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Up builds the lab. A lab that is already up and healthy is left alone;
// a broken leftover of the same name is torn down first.
func (l *Lab) Up(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.load() {
		if len(l.problems(ctx)) == 0 {
			l.logf("lab %s is already up", l.Spec.Name)
			return nil
		}
		l.logf("lab %s: tearing down a broken earlier instance", l.Spec.Name)
		if err := l.down(ctx); err != nil {
			return err
		}
	}
	l.state = labState{Name: l.Spec.Name}
	for _, m := range l.sshMembers() {
		l.state.Addrs = append(l.state.Addrs, m.addr)
	}
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(l.Dir, 0o755); err != nil {
		return err
	}
	if err := l.save(); err != nil {
		return err
	}
	start := time.Now()
	var cold map[string]string
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"network", l.buildNetwork},
		{"keys", l.writeKeys},
		{"routers", l.startRouters},
		{"ssh", l.startSSHDs},
	}
	if l.VM != nil {
		steps = append(steps, struct {
			name string
			fn   func(context.Context) error
		}{"vms", func(ctx context.Context) (err error) { cold, err = l.startVMs(ctx); return err }})
	}
	if l.Container != nil {
		steps = append(steps, struct {
			name string
			fn   func(context.Context) error
		}{"containers", l.startContainers})
	}
	steps = append(steps, struct {
		name string
		fn   func(context.Context) error
	}{"converge", l.waitReady})
	if l.VM != nil {
		steps = append(steps, struct {
			name string
			fn   func(context.Context) error
		}{"settle", func(ctx context.Context) error { return l.settleVMs(ctx, cold) }})
	}
	for _, s := range steps {
		if err := s.fn(ctx); err != nil {
			l.save()
			return fmt.Errorf("lab %s up: %s: %w", l.Spec.Name, s.name, err)
		}
	}
	l.logf("lab %s is up in %s: %d routers, %d nodes", l.Spec.Name, time.Since(start).Round(time.Millisecond), len(l.Spec.Routers), len(l.Spec.Nodes))
	return l.save()
}

// members are the lab's network namespaces; VM nodes have none.
func (l *Lab) members() []string {
	m := []string{WorkstationName}
	for _, r := range l.Spec.Routers {
		m = append(m, r.Name)
	}
	if l.VM == nil {
		for _, n := range l.Spec.Nodes {
			m = append(m, n.Name)
		}
	}
	return m
}

func (l *Lab) buildNetwork(ctx context.Context) error {
	for _, m := range l.members() {
		ns := l.NS(m)
		if err := ip(ctx, "netns", "add", ns); err != nil {
			return err
		}
		l.state.Namespaces = append(l.state.Namespaces, ns)
		if err := l.save(); err != nil {
			return err
		}
		if err := ip(ctx, "-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	// Auto-named ports (toward nodes, toward the spine) follow the declared
	// interfaces: eth1, eth2... as in the blog's leaf configs.
	used := map[string]map[string]bool{}
	nextPort := func(member string) string {
		if used[member] == nil {
			used[member] = map[string]bool{}
		}
		for i := 0; ; i++ {
			n := fmt.Sprintf("eth%d", i)
			if !used[member][n] {
				used[member][n] = true
				return n
			}
		}
	}
	declare := func(member, port string) {
		if used[member] == nil {
			used[member] = map[string]bool{}
		}
		used[member][port] = true
	}
	ws := l.Spec.Workstation
	declare(WorkstationName, ws.Bridge)
	bridges := map[string]bool{WorkstationName + "/" + ws.Bridge: true}
	var cmds [][]string
	addr := func(member, dev, cidr string) {
		cmds = append(cmds, []string{"-n", l.NS(member), "addr", "add", cidr, "dev", dev})
	}
	up := func(member, dev string) {
		cmds = append(cmds, []string{"-n", l.NS(member), "link", "set", dev, "up"})
	}
	bridge := func(member, dev, cidr string) {
		cmds = append(cmds, []string{"-n", l.NS(member), "link", "add", dev, "type", "bridge", "stp_state", "0"})
		addr(member, dev, cidr)
		up(member, dev)
	}
	bridge(WorkstationName, ws.Bridge, ws.Address)
	for _, r := range l.Spec.Routers {
		for _, in := range r.Interfaces {
			declare(r.Name, in.Name)
		}
		for _, b := range r.Bridges {
			declare(r.Name, b.Name)
			bridges[r.Name+"/"+b.Name] = true
			bridge(r.Name, b.Name, b.Address)
		}
	}
	// veth connects here (member/dev) to there (member/port or bridge).
	veth := func(member, dev, target string) {
		tm, tp, _ := strings.Cut(target, "/")
		peer := tp
		if bridges[target] {
			peer = nextPort(tm)
		}
		cmds = append(cmds, []string{"-n", l.NS(member), "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", l.NS(tm)})
		if bridges[target] {
			cmds = append(cmds, []string{"-n", l.NS(tm), "link", "set", peer, "master", tp})
		}
		up(tm, peer)
		up(member, dev)
	}
	for _, r := range l.Spec.Routers {
		for _, in := range r.Interfaces {
			if in.Connect != "" {
				veth(r.Name, in.Name, in.Connect)
			}
		}
	}
	for _, r := range l.Spec.Routers {
		for _, in := range r.Interfaces {
			addr(r.Name, in.Name, in.Address)
		}
		if r.Gateway != "" {
			cmds = append(cmds, []string{"-n", l.NS(r.Name), "route", "add", "default", "via", r.Gateway})
		}
	}
	for i, n := range l.Spec.Nodes {
		if l.VM != nil {
			// The VM's NIC is a TAP on the leaf's bridge: QEMU opens it
			// from inside the leaf's namespace.
			leaf, br, _ := strings.Cut(n.Connect, "/")
			cmds = append(cmds, []string{"-n", l.NS(leaf), "tuntap", "add", "dev", tapName(i), "mode", "tap"},
				[]string{"-n", l.NS(leaf), "link", "set", tapName(i), "master", br})
			up(leaf, tapName(i))
			continue
		}
		veth(n.Name, "eth0", n.Connect)
		addr(n.Name, "eth0", n.Address)
		cmds = append(cmds, []string{"-n", l.NS(n.Name), "route", "add", "default", "via", n.Gateway})
	}
	for _, rt := range ws.Routes {
		cmds = append(cmds, []string{"-n", l.NS(WorkstationName), "route", "add", rt.To, "via", rt.Via})
	}
	for _, c := range cmds {
		if err := ip(ctx, c...); err != nil {
			return err
		}
	}
	// New namespaces start with forwarding off.
	for _, r := range l.Spec.Routers {
		if err := nsExec(ctx, l.NS(r.Name), "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			return err
		}
	}
	return nil
}

func nsExec(ctx context.Context, ns string, args ...string) error {
	return ip(ctx, append([]string{"netns", "exec", ns}, args...)...)
}

// writeKeys creates the lab's client key and one ed25519 host key per
// sshd: generated in Go, so labs need no ssh-keygen and no RSA delay.
func (l *Lab) writeKeys(ctx context.Context) error {
	var pub xssh.PublicKey
	var err error
	if l.VM != nil {
		// VMs trust the key baked into their image.
		pub, err = copyKey(filepath.Join(l.VM.ImageDir, "id_ed25519"), l.KeyFile())
	} else {
		pub, err = writeKey(l.KeyFile(), "k8slab lab "+l.Spec.Name)
	}
	if err != nil {
		return err
	}
	if err := os.WriteFile(l.KeyFile()+".pub", xssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
		return err
	}
	akDir := filepath.Join(l.Dir, "authorized_keys")
	if err := os.MkdirAll(akDir, 0o755); err != nil {
		return err
	}
	users := []string{"root"}
	for _, u := range l.Spec.Login.Users {
		users = append(users, u.Name)
	}
	for _, u := range users {
		if err := os.WriteFile(filepath.Join(akDir, u), xssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
			return err
		}
	}
	for _, m := range l.sshdMembers() {
		if err := os.MkdirAll(l.memberDir(m.name), 0o755); err != nil {
			return err
		}
		if _, err := writeKey(filepath.Join(l.memberDir(m.name), "ssh_host_ed25519_key"), "root@"+m.name); err != nil {
			return err
		}
	}
	return nil
}

func copyKey(from, to string) (xssh.PublicKey, error) {
	b, err := os.ReadFile(from)
	if err != nil {
		return nil, err
	}
	signer, err := xssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return signer.PublicKey(), os.WriteFile(to, b, 0o600)
}

func writeKey(path, comment string) (xssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	blk, err := xssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, err
	}
	return xssh.NewPublicKey(pub)
}

type sshMember struct{ name, addr string }

// sshdMembers are the members whose sshd runs in a namespace: routers
// that ask for one, and nodes unless they are VMs or containers (which
// run their own).
func (l *Lab) sshdMembers() []sshMember {
	if l.VM != nil || l.Container != nil {
		return l.sshMembers()[:l.routerSSHCount()]
	}
	return l.sshMembers()
}

func (l *Lab) routerSSHCount() int {
	n := 0
	for _, r := range l.Spec.Routers {
		if r.SSH {
			n++
		}
	}
	return n
}

// sshMembers lists who answers SSH: routers that ask, then every node.
func (l *Lab) sshMembers() []sshMember {
	var out []sshMember
	for _, r := range l.Spec.Routers {
		if r.SSH {
			p, _ := netip.ParsePrefix(r.Interfaces[0].Address)
			out = append(out, sshMember{r.Name, p.Addr().String()})
		}
	}
	for _, n := range l.Spec.Nodes {
		p, _ := netip.ParsePrefix(n.Address)
		out = append(out, sshMember{n.Name, p.Addr().String()})
	}
	return out
}

func (l *Lab) startRouters(ctx context.Context) error {
	for _, r := range l.Spec.Routers {
		dir := l.memberDir(r.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		conf, err := BirdConfig(r)
		if err != nil {
			return err
		}
		if l.CalicoPeering.IsValid() {
			for _, rack := range l.Spec.Racks() {
				if rack.Router != r.Name {
					continue
				}
				peering, err := FabricConfig(rack, Bird2, l.CalicoPeering)
				if err != nil {
					return err
				}
				conf += "\n" + peering
			}
		}
		cf := filepath.Join(dir, "bird.conf")
		if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
			return err
		}
		if err := l.start(r.Name, "bird", filepath.Join(dir, "bird.log"),
			[]string{"ip", "netns", "exec", l.NS(r.Name), "bird", "-f", "-c", cf, "-s", l.birdSocket(r.Name)}); err != nil {
			return err
		}
	}
	return nil
}

// start runs a member's daemon and records it in the lab's state, so
// lab down finds it even if this process dies next.
func (l *Lab) start(member, role, logPath string, args []string) error {
	p, err := startDaemon(member, role, logPath, args)
	if err != nil {
		return err
	}
	l.state.Procs = append(l.state.Procs, p)
	return l.save()
}

func (l *Lab) birdSocket(router string) string {
	return filepath.Join(l.memberDir(router), "bird.ctl")
}

// hashPasswords makes crypt(3) SHA-512 hashes with openssl, which every
// Debian has: Go's standard library has no crypt.
func (l *Lab) hashPasswords(ctx context.Context) (map[string]string, error) {
	pw := map[string]string{"root": l.Spec.Login.RootPassword}
	for _, u := range l.Spec.Login.Users {
		pw[u.Name] = u.Password
	}
	out := map[string]string{}
	for user, p := range pw {
		if p == "" {
			continue
		}
		cmd := exec.CommandContext(ctx, "openssl", "passwd", "-6", "-stdin")
		cmd.Stdin = strings.NewReader(p + "\n")
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("hashing %s's password with openssl: %w", user, err)
		}
		out[user] = strings.TrimSpace(string(b))
	}
	return out, nil
}

func (l *Lab) startSSHDs(ctx context.Context) error {
	hashes, err := l.hashPasswords(ctx)
	if err != nil {
		return err
	}
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		return string(b), err
	}
	passwd, err := read("/etc/passwd")
	if err != nil {
		return err
	}
	shadow, err := read("/etc/shadow")
	if err != nil {
		return err
	}
	group, err := read("/etc/group")
	if err != nil {
		return err
	}
	home := filepath.Join(l.Dir, "home")
	if err := os.MkdirAll(filepath.Join(home, "root"), 0o700); err != nil {
		return err
	}
	for i, u := range l.Spec.Login.Users {
		d := filepath.Join(home, u.Name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chown(d, labUID+i, labUID+i); err != nil {
			return err
		}
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return err
	}
	for _, m := range l.sshdMembers() {
		dir := l.memberDir(m.name)
		etc := renderEtc(passwd, shadow, group, m.name, home, l.Spec.Login, hashes)
		etcDir := filepath.Join(dir, "etc")
		if err := os.MkdirAll(etcDir, 0o755); err != nil {
			return err
		}
		files := []struct {
			name, body string
			mode       os.FileMode
		}{
			{"passwd", etc.Passwd, 0o644}, {"shadow", etc.Shadow, 0o640}, {"group", etc.Group, 0o644},
			{"sudoers", etc.Sudoers, 0o440}, {"hosts", etc.Hosts, 0o644}, {"hostname", etc.Hostname, 0o644},
			{"pam-sshd", pamSSHD, 0o644},
			// No DNS server: nothing on a lab node may aim traffic outside the lab.
			{"resolv.conf", "# k8slab lab node: no DNS server on this network\n", 0o644},
		}
		for _, f := range files {
			p := filepath.Join(etcDir, f.name)
			os.Remove(p)
			if err := os.WriteFile(p, []byte(f.body), f.mode); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(SSHDConfig(m.addr, dir, filepath.Join(l.Dir, "authorized_keys"))), 0o644); err != nil {
			return err
		}
		if err := l.startSSHD(m.name, nil); err != nil {
			return err
		}
	}
	return nil
}

// startSSHD runs sshd in the member's network namespace plus a UTS and a
// mount namespace of its own: its hostname and /etc accounts are the
// node's, and nothing is mounted over the host's files.
func (l *Lab) startSSHD(member string, extra []string) error {
	dir := l.memberDir(member)
	etc := filepath.Join(dir, "etc")
	script := `set -e
echo "$1" > /proc/sys/kernel/hostname
for f in passwd shadow group sudoers hosts hostname resolv.conf; do
	if [ -e "/etc/$f" ]; then mount --bind "$2/$f" "/etc/$f"; fi
done
if [ -e /etc/pam.d/sshd ]; then mount --bind "$2/pam-sshd" /etc/pam.d/sshd; fi
# ip netns exec remounted /sys for the namespace, hiding the cgroup tree.
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true
dir="$3"; shift 3
exec /usr/sbin/sshd -D -e -f "$dir/sshd_config" "$@"`
	args := []string{
		"ip", "netns", "exec", l.NS(member),
		"unshare", "--uts", "--mount", "--propagation", "private",
		"sh", "-c", script, "sh", member, etc, dir,
	}
	for _, o := range extra {
		args = append(args, "-o", o)
	}
	return l.start(member, "sshd", filepath.Join(dir, "sshd.log"), args)
}

// waitReady polls until every BGP session is Established, every router
// routes every node subnet and every sshd accepts connections.
func (l *Lab) waitReady(ctx context.Context) error {
	limit := 30 * time.Second
	if l.VM != nil {
		limit = l.VM.bootTimeout()
	}
	if l.Container != nil {
		// Four nodes boot systemd at once in about 5 s on two cores.
		limit = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		// A daemon that exited does not come back: say so now, with the
		// end of its log, rather than after the whole wait.
		if dead := l.deadProcs(); len(dead) > 0 {
			return errors.New(strings.Join(dead, "; "))
		}
		probs := l.problems(ctx)
		if len(probs) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %s", limit, strings.Join(probs, "; "))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// deadProcs names the lab's daemons that are not running, each with the
// last line of its log.
func (l *Lab) deadProcs() []string {
	var dead []string
	for _, p := range l.state.Procs {
		if !p.running() {
			log := filepath.Join(l.memberDir(p.Member), p.Role+".log")
			msg := fmt.Sprintf("%s: %s (pid %d) is not running (see %s)", p.Member, p.Role, p.PID, log)
			if b, err := os.ReadFile(log); err == nil {
				if last := lastLine(string(b)); last != "" {
					msg += ": " + last
				}
			}
			dead = append(dead, msg)
		}
	}
	return dead
}

// lastLine is s's last non-empty line, at most 300 bytes of it.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// problems lists what keeps the lab from being up; empty means healthy.
func (l *Lab) problems(ctx context.Context) []string {
	if dead := l.deadProcs(); len(dead) > 0 {
		return dead
	}
	var probs []string
	st := l.status(ctx)
	for _, r := range st.Routers {
		for name, state := range r.Sessions {
			if state != "Established" {
				probs = append(probs, fmt.Sprintf("%s: BGP %s is %s", r.Name, name, state))
			}
		}
		for _, miss := range r.Missing {
			probs = append(probs, fmt.Sprintf("%s: no route to %s", r.Name, miss))
		}
	}
	for _, s := range st.SSH {
		if !s.Open {
			probs = append(probs, fmt.Sprintf("%s: sshd on %s:22 not accepting", s.Member, s.Addr))
		}
	}
	return probs
}

// bgpState reads a BGP session's state from a `birdc show protocols`
// line: the first BGP state word after the protocol's own state (BIRD's
// "since" column may take one or two words), else that protocol state.
func bgpState(f []string) string {
	for _, w := range f[4:] {
		switch w {
		case "Established", "Active", "Connect", "Idle", "OpenSent", "OpenConfirm", "Close":
			return w
		}
	}
	return f[3]
}

// Status is the lab's observable state.
type Status struct {
	Name    string         `json:"name"`
	Up      bool           `json:"up"`
	Routers []RouterStatus `json:"routers"`
	SSH     []SSHStatus    `json:"ssh"`
	Procs   []Proc         `json:"procs"`
	Issues  []string       `json:"issues,omitempty"`
}

// RouterStatus reports BGP sessions and missing node routes.
type RouterStatus struct {
	Name     string            `json:"name"`
	Sessions map[string]string `json:"sessions"`
	// NodePeers are the sessions with Calico nodes (--calico-peering).
	NodePeers map[string]string `json:"nodePeers,omitempty"`
	Missing   []string          `json:"missingRoutes,omitempty"`
}

// SSHStatus says whether a member's sshd answers.
type SSHStatus struct {
	Member string `json:"member"`
	Addr   string `json:"addr"`
	Open   bool   `json:"open"`
}

// Status reads the lab's live state.
func (l *Lab) Status(ctx context.Context) Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.load() {
		return Status{Name: l.Spec.Name, Issues: []string{"not up (no state in " + l.Dir + ")"}}
	}
	st := l.status(ctx)
	st.Issues = l.problems(ctx)
	st.Up = len(st.Issues) == 0
	return st
}

func (l *Lab) status(ctx context.Context) Status {
	st := Status{Name: l.Spec.Name, Procs: l.state.Procs}
	var nodeNets []string
	for _, r := range l.Spec.Routers {
		for _, b := range r.Bridges {
			p, _ := netip.ParsePrefix(b.Address)
			nodeNets = append(nodeNets, p.Masked().String())
		}
	}
	for _, r := range l.Spec.Routers {
		rs := RouterStatus{Name: r.Name, Sessions: map[string]string{}}
		for _, nb := range r.BGP {
			rs.Sessions[nb.Name] = "unknown"
		}
		if out, err := exec.CommandContext(ctx, "birdc", "-s", l.birdSocket(r.Name), "show", "protocols").Output(); err == nil {
			for _, line := range strings.Split(string(out), "\n") {
				f := strings.Fields(line)
				if len(f) >= 4 && f[1] == "BGP" {
					state := bgpState(f)
					// The fabric's own sessions make the lab up; sessions
					// with Calico nodes (--calico-peering) come up only
					// once a cluster runs, and are reported apart.
					if _, fabric := rs.Sessions[f[0]]; fabric {
						rs.Sessions[f[0]] = state
					} else {
						if rs.NodePeers == nil {
							rs.NodePeers = map[string]string{}
						}
						rs.NodePeers[f[0]] = state
					}
				}
			}
		}
		routes, _ := exec.CommandContext(ctx, "ip", "-n", l.NS(r.Name), "-4", "route", "show").Output()
		have := map[string]bool{}
		for _, line := range strings.Split(string(routes), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				have[f[0]] = true
			}
		}
		for _, n := range nodeNets {
			if !have[n] {
				rs.Missing = append(rs.Missing, n)
			}
		}
		st.Routers = append(st.Routers, rs)
	}
	d := l.Dialer()
	for _, m := range l.sshMembers() {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		c, err := d.DialContext(cctx, "tcp", net.JoinHostPort(m.addr, "22"))
		cancel()
		if err == nil {
			c.Close()
		}
		st.SSH = append(st.SSH, SSHStatus{Member: m.name, Addr: m.addr, Open: err == nil})
	}
	return st
}

// OutsideLabs reads the labs on this machine (under root) once and
// returns a check of an address: the name of the lab that owns addr when
// this process is not in that lab's workstation namespace (a connection
// to addr would then leave the machine by its default route instead of
// reaching the lab), or "" when no lab owns addr or this process is inside
// the lab. Read once because a command checks every node.
func OutsideLabs(root string) func(addr string) string {
	states, _ := filepath.Glob(filepath.Join(root, "*", "state.json"))
	var labs []labState
	for _, p := range states {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var st labState
		if json.Unmarshal(b, &st) == nil {
			labs = append(labs, st)
		}
	}
	inside := map[string]bool{}
	return func(addr string) string {
		owner := ""
		for _, st := range labs {
			if !slices.Contains(st.Addrs, addr) {
				continue
			}
			// Two labs may use the same addresses: inside either is fine.
			in, ok := inside[st.Name]
			if !ok {
				l := &Lab{Spec: &Spec{Name: st.Name}}
				in = sameNetns("/proc/self/ns/net", netns.Path(l.NS(WorkstationName)))
				inside[st.Name] = in
			}
			if in {
				return ""
			}
			if owner == "" {
				owner = st.Name
			}
		}
		return owner
	}
}

func sameNetns(a, b string) bool {
	var sa, sb syscall.Stat_t
	return syscall.Stat(a, &sa) == nil && syscall.Stat(b, &sb) == nil && sa.Ino == sb.Ino && sa.Dev == sb.Dev
}

// Down stops every process the lab started (by PID, with descendants),
// anything else still running in its namespaces, deletes the namespaces
// and the state directory. It is safe to call on a half-built lab.
func (l *Lab) Down(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.load()
	return l.down(ctx)
}

func (l *Lab) down(ctx context.Context) error {
	var errs []error
	for _, p := range l.state.Procs {
		if err := p.kill(5 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", p.Member, p.Role, err))
		}
	}
	nss := map[string]bool{}
	for _, ns := range l.state.Namespaces {
		nss[ns] = true
	}
	// Also namespaces of this lab that a crashed run never recorded.
	if out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "k8slab-"+l.Spec.Name+"-") && l.isMemberNS(f[0]) {
				nss[f[0]] = true
			}
		}
	}
	names := make([]string, 0, len(nss))
	for ns := range nss {
		names = append(names, ns)
	}
	sort.Strings(names)
	for _, ns := range names {
		if pids := pidsInNetns(netns.Path(ns)); len(pids) > 0 {
			if err := killPIDs(pids, 5*time.Second); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", ns, err))
			}
		}
		if _, err := os.Stat(netns.Path(ns)); err == nil {
			if err := ip(ctx, "netns", "del", ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, l.removeContainers()...)
	if len(errs) == 0 {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
		l.state = labState{}
	}
	return errors.Join(errs...)
}

// isMemberNS keeps "lab a" from deleting "lab a-b"'s namespaces.
func (l *Lab) isMemberNS(ns string) bool {
	for _, m := range l.members() {
		if ns == l.NS(m) {
			return true
		}
	}
	return false
}

// SetLink brings a node's (or router's first) lab-facing link down or up,
// the way a pulled cable would.
func (l *Lab) SetLink(ctx context.Context, member string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	dev := "eth0"
	for _, r := range l.Spec.Routers {
		if r.Name == member {
			dev = r.Interfaces[0].Name
		}
	}
	return ip(ctx, "-n", l.NS(member), "link", "set", dev, state)
}

// KillSSH kills a member's sshd and every session under it.
func (l *Lab) KillSSH(member string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.state.Procs {
		if p.Member == member && p.Role == "sshd" {
			return p.kill(5 * time.Second)
		}
	}
	return fmt.Errorf("%s runs no sshd", member)
}

// SSHRestart says how a member's sshd comes back.
type SSHRestart struct {
	// NewHostKey is what a reinstalled node looks like to known_hosts.
	NewHostKey bool
	// Options are extra sshd -o settings, e.g. "PasswordAuthentication=no".
	Options []string
}

// RestartSSH restarts a member's sshd.
func (l *Lab) RestartSSH(ctx context.Context, member string, how SSHRestart) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var kept []Proc
	for _, p := range l.state.Procs {
		if p.Member == member && p.Role == "sshd" {
			if err := p.kill(5 * time.Second); err != nil {
				return err
			}
			continue
		}
		kept = append(kept, p)
	}
	l.state.Procs = kept
	if how.NewHostKey {
		if _, err := writeKey(filepath.Join(l.memberDir(member), "ssh_host_ed25519_key"), "root@"+member); err != nil {
			return err
		}
	}
	if err := l.startSSHD(member, how.Options); err != nil {
		return err
	}
	return l.waitReady(ctx)
}

// Birdc asks a router's BIRD (show protocols, show route ...).
func (l *Lab) Birdc(ctx context.Context, router string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", l.birdSocket(router)}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: birdc %s: %w: %s", router, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Run executes a command line inside a member's namespace (for tests and
// `lab status` diagnostics).
func (l *Lab) Run(ctx context.Context, member string, command string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.NS(member), "sh", "-c", command).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w: %s", member, host.Quote(command), err, out)
	}
	return string(out), nil
}
