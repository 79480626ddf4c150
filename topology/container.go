package topology

import (
	"bufio"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	xssh "golang.org/x/crypto/ssh"
)

// ContainerOptions turn the lab's nodes into systemd containers
// (systemd-nspawn) on the workstation's kernel: each boots its own
// systemd, sshd and, once k8slab has installed them, containerd and the
// kubelet, inside the node's network namespace on the same fabric and
// addresses as the namespace or VM nodes it replaces.
type ContainerOptions struct {
	// RootfsDir is the root filesystem scripts/container/build-rootfs.sh
	// made; every node boots it under a copy-on-write layer of its own.
	RootfsDir string
	// NodesDir holds each node's layer and containerd store while the lab
	// is up; `lab down` removes them.
	NodesDir string
}

//go:embed container-launch.sh
var containerLaunch string

// CheckRootfs says what is missing to start container nodes, naming the
// command that provides it.
func (o *ContainerOptions) CheckRootfs() error {
	if _, err := os.Stat(filepath.Join(o.RootfsDir, "usr/local/lib/k8slab/node-setup.sh")); err != nil {
		return fmt.Errorf("no container-node rootfs in %s: build it with scripts/container/build-rootfs.sh %s (or make container-rootfs)", o.RootfsDir, filepath.Dir(o.RootfsDir))
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		return fmt.Errorf("systemd-nspawn is not installed (Debian: apt-get install systemd-container, or make deps)")
	}
	return nil
}

func (l *Lab) containerDir(node string) string {
	return filepath.Join(l.Container.NodesDir, l.Spec.Name, node)
}

// cgroupName is the node's cgroup in every hierarchy: named like its
// network namespace, so one lab's never collide with another's.
func (l *Lab) cgroupName(node string) string { return l.NS(node) }

// startContainers gives every node its identity in its own layer and
// boots it.
func (l *Lab) startContainers(ctx context.Context) error {
	pub, err := os.ReadFile(l.KeyFile() + ".pub")
	if err != nil {
		return err
	}
	if err := l.checkInotify(); err != nil {
		return err
	}
	for _, n := range l.Spec.Nodes {
		dir := l.containerDir(n.Name)
		if err := removeNodeDir(dir); err != nil {
			return err
		}
		for _, d := range []string{"upper", "work", "root", "containerd"} {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
				return err
			}
		}
		l.state.Dirs = append(l.state.Dirs, dir)
		l.state.Cgroups = append(l.state.Cgroups, l.cgroupName(n.Name))
		if err := l.save(); err != nil {
			return err
		}
		if err := writeIdentity(filepath.Join(dir, "upper"), n.Name, nodeUUID(l.Spec.Name, n.Name), pub); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if err := os.MkdirAll(l.memberDir(n.Name), 0o755); err != nil {
			return err
		}
		if err := l.start(n.Name, "nspawn", filepath.Join(l.memberDir(n.Name), "container.log"),
			[]string{"sh", "-c", containerLaunch, "container-launch", n.Name, l.Container.RootfsDir, dir, l.NS(n.Name), l.cgroupName(n.Name)}); err != nil {
			return err
		}
	}
	return nil
}

// writeIdentity puts what makes a node distinct into its layer: a fresh
// machine-id (the kubelet, Calico and journald key on it), its hostname,
// its product_uuid (node-setup.sh shows it where the kubelet and kubeadm
// read it), an SSH host key and the lab's key for root.
func writeIdentity(upper, name, uuid string, labKey []byte) error {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{"etc/ssh", 0o755}, {"etc/k8slab-container", 0o755}, {"root", 0o700}, {"root/.ssh", 0o700}} {
		if err := os.MkdirAll(filepath.Join(upper, d.path), d.mode); err != nil {
			return err
		}
	}
	files := []struct {
		path string
		body []byte
		mode os.FileMode
	}{
		{"etc/machine-id", []byte(hex.EncodeToString(id) + "\n"), 0o444},
		{"etc/hostname", []byte(name + "\n"), 0o644},
		{"etc/k8slab-container/product_uuid", []byte(uuid + "\n"), 0o444},
		{"root/.ssh/authorized_keys", labKey, 0o600},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(upper, f.path), f.body, f.mode); err != nil {
			return err
		}
	}
	hk := filepath.Join(upper, "etc/ssh/ssh_host_ed25519_key")
	pub, err := writeKey(hk, "root@"+name)
	if err != nil {
		return err
	}
	return os.WriteFile(hk+".pub", xssh.MarshalAuthorizedKey(pub), 0o644)
}

// removeContainers undoes startContainers once the nodes' processes are
// gone: their cgroups in every hierarchy, then their directories.
func (l *Lab) removeContainers() []error {
	var errs []error
	for _, cg := range l.state.Cgroups {
		if err := removeCgroup(cg, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range l.state.Dirs {
		if err := removeNodeDir(d); err != nil {
			errs = append(errs, err)
		}
		os.Remove(filepath.Dir(d)) // the lab's folder, once empty
	}
	if err := l.restoreInotify(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// inotifyPerNode is how many inotify instances one container node is
// counted for (systemd, containerd, the kubelet, kube-proxy, calico-node,
// CoreDNS): they all count against the workstation's root user, whose
// default limit of 128 ran out with eight nodes ("fsnotify watcher init:
// too many open files" from kube-proxy and calico-node), while four
// nodes and the workstation held up to 90 instances through the container
// e2e (34 instances and 116 watches during an install). inotifyBase is
// the workstation's own share.
const (
	inotifyPerNode = 20
	inotifyBase    = 32
)

// procSys is where kernel settings are read (tests point it at a folder
// of their own).
var procSys = "/proc/sys"

// inotifyLimits are the workstation settings container nodes share.
var inotifyLimits = []string{"fs/inotify/max_user_instances", "fs/inotify/max_user_watches"}

func (l *Lab) inotifyWanted() map[string]int {
	return map[string]int{
		"fs/inotify/max_user_instances": inotifyBase + inotifyPerNode*len(l.Spec.Nodes),
		"fs/inotify/max_user_watches":   8192,
	}
}

// checkInotify refuses a container lab whose nodes would run out of the
// workstation's inotify limits, naming the setting and the command that
// raises it. A lab never changes the workstation's settings itself.
func (l *Lab) checkInotify() error {
	var low []string
	for _, k := range inotifyLimits {
		want := l.inotifyWanted()[k]
		cur, err := readSysctl(k)
		if err != nil {
			return err
		}
		if cur < want {
			low = append(low, fmt.Sprintf("%s is %d, %d container nodes need %d: sysctl -w %s=%d", strings.ReplaceAll(k, "/", "."), cur, len(l.Spec.Nodes), want, strings.ReplaceAll(k, "/", "."), want))
		}
	}
	if len(low) > 0 {
		return fmt.Errorf("lab %s: the workstation's inotify limits are too low for its nodes (k8slab does not change the workstation's settings; raise them, or use fewer nodes):\n  %s", l.Spec.Name, strings.Join(low, "\n  "))
	}
	return nil
}

// inotifyRecord kept the workstation's own values while a container lab
// of an earlier k8slab, which raised them, was up.
func (l *Lab) inotifyRecord() string { return filepath.Join(filepath.Dir(l.Dir), "inotify.orig") }

// restoreInotify puts back the inotify limits a lab of an earlier
// k8slab raised, once no other such lab is up.
func (l *Lab) restoreInotify() error {
	if !l.state.RaisedInotify {
		return nil
	}
	states, _ := filepath.Glob(filepath.Join(filepath.Dir(l.Dir), "*", "state.json"))
	for _, p := range states {
		var st labState
		if p == l.statePath() {
			continue
		}
		if b, err := os.ReadFile(p); err == nil && json.Unmarshal(b, &st) == nil && st.RaisedInotify {
			l.logf("lab %s: inotify limits stay raised for lab %s", l.Spec.Name, st.Name)
			return nil
		}
	}
	b, err := os.ReadFile(l.inotifyRecord())
	if err != nil {
		return nil
	}
	orig := map[string]int{}
	if err := json.Unmarshal(b, &orig); err != nil {
		return fmt.Errorf("%s: %w", l.inotifyRecord(), err)
	}
	for k, v := range orig {
		if err := os.WriteFile(filepath.Join(procSys, k), []byte(strconv.Itoa(v)), 0o644); err != nil {
			return fmt.Errorf("restoring %s: %w", k, err)
		}
		l.logf("lab %s: %s back to %d", l.Spec.Name, strings.ReplaceAll(k, "/", "."), v)
	}
	return os.Remove(l.inotifyRecord())
}

func readSysctl(key string) (int, error) {
	b, err := os.ReadFile(filepath.Join(procSys, key))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// cgroupDirs lists name's directory in every mounted hierarchy that has it.
func cgroupDirs(name string) []string {
	var out []string
	for _, root := range cgroupRoots() {
		if d := filepath.Join(root, name); isDir(d) {
			out = append(out, d)
		}
	}
	return out
}

// mount is one line of /proc/self/mountinfo, as far as the lab needs it.
type mount struct{ root, point, fstype string }

// mounts lists this mount namespace's mounts.
func mounts() []mount {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS ... - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, t := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(t) > 0 {
			out = append(out, mount{root: f[3], point: f[4], fstype: t[0]})
		}
	}
	return out
}

// cgroupRoots are the workstation's cgroup mount points (v1: one per
// hierarchy; v2: one).
func cgroupRoots() []string {
	var out []string
	for _, m := range mounts() {
		if m.root == "/" && (m.fstype == "cgroup" || m.fstype == "cgroup2") {
			out = append(out, m.point)
		}
	}
	return out
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// removeCgroup removes the cgroup and everything the node made under it
// (kubepods.slice, system.slice, ...), deepest first; a cgroup whose last
// process is still exiting is busy for a moment, so it retries.
func removeCgroup(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for _, d := range cgroupDirs(name) {
			var dirs []string
			filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
				if err == nil && e.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
					left = append(left, dirs[i])
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: %d directories still busy, e.g. %s", name, len(left), left[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeNodeDir deletes a node's layer and store, but never while anything
// is mounted below it: removing through a live overlay or bind mount
// would reach files that are not the node's.
func removeNodeDir(dir string) error {
	if m := mountsBelow(dir); len(m) > 0 {
		return fmt.Errorf("%s: still mounted: %s", dir, strings.Join(m, ", "))
	}
	return os.RemoveAll(dir)
}

// mountsBelow lists mount points at or under dir in this mount namespace.
func mountsBelow(dir string) []string {
	var out []string
	for _, m := range mounts() {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	return out
}

// ContainerLeftovers lists what a lab's container nodes left on the
// workstation: cgroups, node directories, mounts. Empty after `lab down`.
func ContainerLeftovers(o *ContainerOptions, lab string) []string {
	var out []string
	l := &Lab{Spec: &Spec{Name: lab}}
	prefix := l.NS("")
	for _, root := range cgroupRoots() {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			if e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
				out = append(out, "cgroup "+filepath.Join(root, e.Name()))
			}
		}
	}
	dir := filepath.Join(o.NodesDir, lab)
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		out = append(out, fmt.Sprintf("%d node directories in %s", len(entries), dir))
	}
	for _, m := range mountsBelow(o.NodesDir) {
		out = append(out, "mount "+m)
	}
	return out
}

// KernelSettings reads the workstation's writable kernel settings outside
// the network namespaces (/proc/sys/kernel, vm, fs), one "key=value" a
// line, leaving out those the kernel changes by itself. A lab must leave
// them as it found them.
func KernelSettings() string {
	volatile := map[string]bool{
		"kernel/ns_last_pid": true, "kernel/perf_event_max_sample_rate": true,
		"kernel/random/write_wakeup_threshold": true, "kernel/tainted": true,
	}
	var b strings.Builder
	for _, top := range []string{"kernel", "vm", "fs"} {
		filepath.WalkDir(filepath.Join("/proc/sys", top), func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			key := strings.TrimPrefix(p, "/proc/sys/")
			if fi, err := e.Info(); err != nil || fi.Mode().Perm()&0o200 == 0 || volatile[key] {
				return nil
			}
			v, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			fmt.Fprintf(&b, "%s=%s\n", key, strings.Join(strings.Fields(string(v)), " "))
			return nil
		})
	}
	return b.String()
}

// NodeUsage is what a container node has cost the workstation so far:
// CPU time of everything in its cgroup, and the memory it holds now
// (resident, without the page cache).
type NodeUsage struct {
	CPU      time.Duration
	RSSBytes int64
}

// Usage reads a container node's cgroup (cgroup v1: cpuacct and memory).
func (l *Lab) Usage(node string) (NodeUsage, error) {
	var u NodeUsage
	cg := l.cgroupName(node)
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuacct", cg, "cpuacct.usage"))
	if err != nil {
		return u, fmt.Errorf("%s: CPU time: %w", node, err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return u, fmt.Errorf("%s: cpuacct.usage: %w", node, err)
	}
	u.CPU = time.Duration(ns)
	stat, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cg, "memory.stat"))
	if err != nil {
		return u, fmt.Errorf("%s: memory: %w", node, err)
	}
	for _, line := range strings.Split(string(stat), "\n") {
		if v, ok := strings.CutPrefix(line, "total_rss "); ok {
			u.RSSBytes, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return u, nil
}
