package topology

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/ssh"
)

// VMOptions turn the lab's nodes into QEMU virtual machines: real kernels,
// systemd and cgroups for kubeadm, on the same fabric and addresses as the
// namespace nodes they replace.
type VMOptions struct {
	// ImageDir holds base.qcow2, vmlinuz, initrd.img and the id_ed25519 key
	// baked into the image (scripts/vm/build-image.sh).
	ImageDir string
	// DiskDir keeps each node's overlay disk and its first-boot snapshot; it
	// outlives `lab down` so the next `lab up` boots in seconds.
	DiskDir string
	// Fresh ignores snapshots and boots every node from a new overlay.
	Fresh bool
	// Resume names the snapshot to boot from (default: the boot snapshot
	// taken after the first boot). A lab saved later with SaveSnapshot (e.g. with an
	// installed cluster) resumes there; a node without it is an error, so
	// the nodes never come up from different points in time.
	Resume string
	// Accel is "auto" (default: probe KVM, else TCG), "tcg" or "kvm".
	Accel string
	// BootTimeout bounds the wait for every node's SSH (default 5 min).
	BootTimeout time.Duration
}

// Default VM sizes: enough for kubeadm's preflight on workers.
const (
	defaultVMMemoryMB = 2048
	defaultVMCPUs     = 2
	tcgCacheMB        = 2048
)

func (o *VMOptions) bootTimeout() time.Duration {
	if o.BootTimeout > 0 {
		return o.BootTimeout
	}
	return 5 * time.Minute
}

// CheckImage says what is missing to boot VMs, naming the command that builds it.
func (o *VMOptions) CheckImage() error {
	var missing []string
	for _, f := range []string{"base.qcow2", "vmlinuz", "initrd.img", "id_ed25519"} {
		if _, err := os.Stat(filepath.Join(o.ImageDir, f)); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("VM image in %s lacks %s: build it with scripts/vm/build-image.sh (or make vm-image)", o.ImageDir, strings.Join(missing, ", "))
	}
	return nil
}

// chooseAccel resolves "auto": KVM only when a probe boot works. On these
// machines /dev/kvm is nested PVM, where guests abort (MSR 0x10a) or hang
// after "Probing EDD", so trusting /dev/kvm's presence would fail.
func (l *Lab) chooseAccel(ctx context.Context) string {
	switch l.VM.Accel {
	case "tcg", "kvm":
		return l.VM.Accel
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		l.logf("accel: tcg (no usable /dev/kvm: %v)", err)
		return "tcg"
	}
	f.Close()
	// The image's kernel without a root disk: a working KVM reaches the
	// "unable to mount root" panic in a second or two.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-machine", "pc",
		"-m", "256", "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
		"-kernel", filepath.Join(l.VM.ImageDir, "vmlinuz"),
		"-append", "console=ttyS0 panic=-1 root=/dev/k8slab-probe").CombinedOutput()
	if strings.Contains(string(out), "Kernel panic") {
		l.logf("accel: kvm (probe boot reached the kernel)")
		return "kvm"
	}
	last := lastLine(string(out))
	if ctx.Err() != nil {
		last = "probe boot hung"
	}
	l.logf("accel: tcg (KVM probe failed: %.120s)", last)
	return "tcg"
}

// tapName is the node's port on its leaf bridge.
func tapName(i int) string { return fmt.Sprintf("tap%d", i) }

// vmMAC derives a stable, locally administered MAC from the node address.
func vmMAC(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// nodeUUID is a node's product_uuid, stable per lab and node: kubeadm
// wants it unique per node, and a VM snapshot must come back with the
// same one.
func nodeUUID(lab, node string) string {
	h := sha1.Sum([]byte("k8slab/" + lab + "/" + node))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

func (l *Lab) overlay(node string) string {
	return filepath.Join(l.VM.DiskDir, l.Spec.Name, node+".qcow2")
}

// machine is what a node's saved state depends on: QEMU restores a
// snapshot only into the same virtual hardware (one saved with 2 vCPUs
// made QEMU exit at start with 4), and a resumed guest keeps the kernel
// command line and SMBIOS UUID it booted with.
type machine struct {
	accel, cpu     string
	cpus, memMB    int
	uuid, cmdline  string
	kernel, initrd string
}

// bootSnapshot names the snapshot taken after a node's first boot after
// its machine: a change of vCPUs, memory, UUID or kernel arguments finds
// no snapshot of that name, and the node boots cold from a new overlay.
func (m machine) bootSnapshot() string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%q", []any{m.accel, m.cpu, m.cpus, m.memMB, m.uuid, m.cmdline, m.kernel, m.initrd})))
	return fmt.Sprintf("boot-%x", h[:6])
}

// resume is the snapshot a node boots from: the one a test named, or
// the node's boot snapshot.
func (o *VMOptions) resume(m machine) string {
	if o.Resume != "" {
		return o.Resume
	}
	return m.bootSnapshot()
}

// SaveSnapshot saves every running node (memory and disk) under name, one
// node at a time: savevm stalls the host's disk, and parallel saves made
// the other nodes' SSH handshakes time out.
func (l *Lab) SaveSnapshot(ctx context.Context, name string) error {
	for _, n := range l.Spec.Nodes {
		if err := l.savevm(ctx, n.Name, name); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) savevm(ctx context.Context, node, name string) error {
	res, err := l.monitor(ctx, node, "savevm "+name)
	if err != nil {
		return err
	}
	if strings.Contains(strings.ToLower(res), "error") {
		return fmt.Errorf("%s: savevm %s: %s", node, name, strings.TrimSpace(strings.TrimSuffix(res, "(qemu) ")))
	}
	return nil
}

// hasSnapshot reports whether the overlay holds the named snapshot.
func hasSnapshot(ctx context.Context, disk, name string) bool {
	out, err := exec.CommandContext(ctx, "qemu-img", "snapshot", "-l", "-U", disk).Output()
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == name {
			return true
		}
	}
	return false
}

// startVMs boots every node; it returns the snapshot each cold-booted node
// is to be saved as (resumed nodes are absent).
func (l *Lab) startVMs(ctx context.Context) (cold map[string]string, err error) {
	cold = map[string]string{}
	accel := l.chooseAccel(ctx)
	if err := os.MkdirAll(filepath.Join(l.VM.DiskDir, l.Spec.Name), 0o755); err != nil {
		return nil, err
	}
	for i, n := range l.Spec.Nodes {
		m, err := l.machineOf(n, accel)
		if err != nil {
			return nil, err
		}
		boot, resume := m.bootSnapshot(), l.VM.resume(m)
		disk := l.overlay(n.Name)
		// A cold boot starts from the base image: the overlay of a disk
		// without the snapshot holds whatever the last run left on it.
		if _, err := os.Stat(disk); err == nil && (l.VM.Fresh || resume == boot && !hasSnapshot(ctx, disk, boot)) {
			os.Remove(disk)
		}
		if _, err := os.Stat(disk); os.IsNotExist(err) {
			out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2",
				"-b", filepath.Join(l.VM.ImageDir, "base.qcow2"), "-F", "qcow2", disk).CombinedOutput()
			if err != nil {
				return nil, fmt.Errorf("%s: overlay: %v: %s", n.Name, err, out)
			}
		}
		resumed := hasSnapshot(ctx, disk, resume) && !l.VM.Fresh
		if !resumed && resume != boot {
			return nil, fmt.Errorf("%s: no snapshot %q in %s", n.Name, resume, disk)
		}
		if !resumed {
			cold[n.Name] = boot
		}
		dir := l.memberDir(n.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		args := l.qemuArgs(i, n, m, disk)
		if resumed {
			args = append(args, "-loadvm", resume)
		}
		leaf, _, _ := strings.Cut(n.Connect, "/")
		launch := []string{"ip", "netns", "exec", l.NS(leaf)}
		if n.Nice > 0 {
			// nice execs QEMU, so every vCPU thread inherits it.
			launch = append(launch, "nice", "-n", fmt.Sprint(n.Nice))
		}
		p, err := startDaemon(n.Name, "qemu", filepath.Join(dir, "qemu.log"), append(launch, args...))
		if err != nil {
			return nil, err
		}
		if n.Nice > 0 {
			// With the kernel's autogroups on, each session is one
			// scheduling group and a thread's nice counts only inside
			// it; QEMU runs in a session of its own, so the group's nice
			// is what yields to the control plane (seen: 100 % -> 150 %).
			if err := os.WriteFile(fmt.Sprintf("/proc/%d/autogroup", p.PID), []byte(fmt.Sprint(n.Nice)), 0); err != nil && !os.IsNotExist(err) {
				l.logf("%s: autogroup nice: %v", n.Name, err)
			}
		}
		l.state.Procs = append(l.state.Procs, p)
		if err := l.save(); err != nil {
			return nil, err
		}
	}
	return cold, nil
}

// machineOf is the virtual hardware node n boots on.
func (l *Lab) machineOf(n Node, accelName string) (machine, error) {
	p, err := netip.ParsePrefix(n.Address)
	if err != nil {
		return machine{}, err
	}
	mask := net.CIDRMask(p.Bits(), 32)
	// The translated-code cache must hold a control plane's working set:
	// at 256 MiB the control-plane VM flushed it every ~15 s during
	// kubeadm init (QEMU monitor `info jit`) and re-translated everything.
	// The buffer is reserved, not resident, until code fills it.
	m := machine{accel: fmt.Sprintf("tcg,thread=multi,tb-size=%d", tcgCacheMB), cpu: "max",
		cpus: n.CPUs, memMB: n.MemoryMB, uuid: nodeUUID(l.Spec.Name, n.Name),
		kernel: filepath.Join(l.VM.ImageDir, "vmlinuz"), initrd: filepath.Join(l.VM.ImageDir, "initrd.img")}
	if accelName == "kvm" {
		m.accel, m.cpu = "kvm", "host"
	}
	if m.memMB == 0 {
		m.memMB = defaultVMMemoryMB
	}
	if m.cpus == 0 {
		m.cpus = defaultVMCPUs
	}
	// Under TCG the kernel's boot-time TSC sync check fails (vCPUs are
	// threads that run at uneven speed) and it falls back to the HPET: then
	// every clock_gettime — which Go's runtime calls constantly — is a
	// syscall plus an emulated MMIO read under QEMU's global lock. TCG's
	// TSC is the host's invariant TSC, so it can be trusted.
	m.cmdline = fmt.Sprintf("root=/dev/vda rw console=ttyS0 net.ifnames=0 tsc=reliable clocksource=tsc systemd.hostname=%s ip=%s::%s:%s:%s:eth0:off",
		n.Name, p.Addr(), n.Gateway, net.IP(mask).String(), n.Name)
	return m, nil
}

// qemuArgs runs node n (the i-th) on machine m with disk as its root.
func (l *Lab) qemuArgs(i int, n Node, m machine, disk string) []string {
	p, _ := netip.ParsePrefix(n.Address)
	dir := l.memberDir(n.Name)
	return []string{
		"qemu-system-x86_64", "-name", n.Name, "-machine", "pc", "-accel", m.accel, "-cpu", m.cpu,
		"-smp", fmt.Sprint(m.cpus), "-m", fmt.Sprint(m.memMB), "-uuid", m.uuid,
		"-kernel", m.kernel, "-initrd", m.initrd, "-append", m.cmdline,
		"-drive", "file=" + disk + ",if=virtio,format=qcow2,cache=unsafe",
		"-netdev", "tap,id=net0,ifname=" + tapName(i) + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=net0,mac=" + vmMAC(p.Addr()),
		"-display", "none", "-vga", "none", "-rtc", "base=utc",
		"-serial", "file:" + filepath.Join(dir, "console.log"),
		"-monitor", "unix:" + l.monitorSocket(n.Name) + ",server,nowait",
	}
}

func (l *Lab) monitorSocket(node string) string {
	return filepath.Join(l.memberDir(node), "monitor.sock")
}

// monitor sends one HMP command and returns its output.
func (l *Lab) monitor(ctx context.Context, node, command string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", l.monitorSocket(node))
	if err != nil {
		return "", fmt.Errorf("%s monitor: %w", node, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	r := bufio.NewReader(c)
	readPrompt := func() (string, error) {
		var b strings.Builder
		for !strings.HasSuffix(b.String(), "(qemu) ") {
			ch, err := r.ReadByte()
			if err != nil {
				return b.String(), err
			}
			b.WriteByte(ch)
		}
		return b.String(), nil
	}
	if _, err := readPrompt(); err != nil {
		return "", fmt.Errorf("%s monitor: %w", node, err)
	}
	if _, err := fmt.Fprintf(c, "%s\n", command); err != nil {
		return "", err
	}
	out, err := readPrompt()
	if err != nil {
		return out, fmt.Errorf("%s monitor %q: %w", node, command, err)
	}
	return out, nil
}

// SSHOptions reach every lab member from the workstation namespace with
// the lab's key. Host keys are made at each lab's first boot, so these
// lab-internal connections do not pin them.
func (l *Lab) SSHOptions() ssh.Options {
	o := ssh.Options{
		KeyFiles:      []string{l.KeyFile()},
		HostKeyPolicy: ssh.Insecure,
		Dial:          l.Dialer().DialContext,
		DialTimeout:   10 * time.Second,
	}
	if l.VM != nil {
		// Emulated nodes answer handshakes late while the host's disk is
		// busy: the last node snapshotted missed a 10 s handshake right
		// after its savevm, and four nodes restoring memory at once did too.
		o.DialTimeout = time.Minute
	}
	return o
}

func (l *Lab) vmPool() (*ssh.Pool, error) {
	o := l.SSHOptions()
	o.CommandTimeout = 2 * time.Minute
	return ssh.NewPool(o)
}

// settleVMs finishes a VM boot: a cold-booted node waits for systemd and is
// snapshotted so the next `lab up` resumes it; a resumed node gets the
// current time, since its clock stopped when the snapshot was taken.
func (l *Lab) settleVMs(ctx context.Context, cold map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, l.VM.bootTimeout())
	defer cancel()
	pool, err := l.vmPool()
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := l.eachNode(func(n Node) error { return l.settleVM(ctx, pool, n, cold[n.Name]) }); err != nil {
		return err
	}
	// Once more now that every node runs: a node set while the others
	// were still being restored had drifted 4 s from them a minute later.
	// Right after four resumed nodes settle, handshakes still time out.
	return l.untilOK(ctx, func() error { return l.syncClocks(ctx, pool) })
}

// KeepClocks sets every node's clock to the workstation's every period
// until ctx ends, reporting failures. The VM lab has no NTP server, and
// emulated guests under load lose seconds per hour. It keeps one SSH
// connection per node: a fresh handshake per node and minute was itself
// work for a saturated control-plane VM, whose sshd then missed a 10 s
// dial limit for half an hour.
func (l *Lab) KeepClocks(ctx context.Context, every time.Duration, report func(error)) error {
	pool, err := l.vmPool()
	if err != nil {
		return err
	}
	defer pool.Close()
	clients := map[string]host.Host{}
	for _, n := range l.Spec.Nodes {
		p, _ := netip.ParsePrefix(n.Address)
		if clients[n.Name], err = pool.Host(ssh.Target{Host: p.Addr().String()}); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
		err := l.setClocks(ctx, func(n Node) (host.Host, error) { return clients[n.Name], nil })
		if err != nil && ctx.Err() == nil {
			report(err)
		}
	}
}

func (l *Lab) syncClocks(ctx context.Context, pool *ssh.Pool) error {
	return l.setClocks(ctx, func(n Node) (host.Host, error) {
		p, _ := netip.ParsePrefix(n.Address)
		return pool.Host(ssh.Target{Host: p.Addr().String()})
	})
}

func (l *Lab) setClocks(ctx context.Context, hostOf func(Node) (host.Host, error)) error {
	return l.eachNode(func(n Node) error {
		c, err := hostOf(n)
		if err == nil {
			err = setClock(ctx, c)
		}
		if err != nil {
			return fmt.Errorf("%s: set clock: %w", n.Name, err)
		}
		return nil
	})
}

// eachNode runs fn for every node in parallel and joins their errors.
func (l *Lab) eachNode(fn func(Node) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(l.Spec.Nodes))
	for i, n := range l.Spec.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(n)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// setClock sets a node's clock to the workstation's. Setting it to the
// time the command was sent leaves it behind by the command's transport
// delay, which on loaded emulated nodes differed by seconds between
// nodes; so after that coarse set the offset is measured (the sample
// with the shortest round trip of three) and corrected relative to the
// node's own clock, which no delay affects. The reading is taken as made
// at the end of its round trip, not the midpoint: on the saturated
// emulated control plane the shell and date took seconds to start after
// the command arrived while the line came back at once, and the midpoint
// left that node ~4.5 s behind the others (preflight refused the lab).
func setClock(ctx context.Context, h host.Host) error {
	now := time.Now().UTC()
	if _, err := host.Output(ctx, h, fmt.Sprintf("date -u -s @%d.%09d >/dev/null", now.Unix(), now.Nanosecond())); err != nil {
		return err
	}
	var offset, best time.Duration
	for i := 0; i < 3; i++ {
		sent := time.Now()
		out, err := host.Output(ctx, h, "date +%s.%N")
		rtt := time.Since(sent)
		if err != nil {
			return err
		}
		secs, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			return fmt.Errorf("reading the clock: %q", out)
		}
		if i == 0 || rtt < best {
			best, offset = rtt, time.Unix(0, int64(secs*1e9)).Sub(sent.Add(rtt))
		}
	}
	_, err := host.Output(ctx, h, fmt.Sprintf(`date -u -s "@$(awk -v n="$(date +%%s.%%N)" 'BEGIN { printf "%%.6f", n - %.6f }')" >/dev/null`, offset.Seconds()))
	return err
}

// settleVM sets a resumed node's clock, or waits for a cold-booted one
// and saves it as snapshot boot.
func (l *Lab) settleVM(ctx context.Context, pool *ssh.Pool, n Node, boot string) error {
	p, _ := netip.ParsePrefix(n.Address)
	c, err := pool.Host(ssh.Target{Host: p.Addr().String()})
	if err != nil {
		return err
	}
	defer c.Close()
	// The lab has no NTP: the workstation's clock is the reference. A
	// resumed node's clock stopped at the snapshot, and a cold boot under
	// emulation lags by seconds (9 s apart was seen; preflight allows 2).
	clock := func() error {
		if err := setClock(ctx, c); err != nil {
			return fmt.Errorf("%s: set clock: %w", n.Name, err)
		}
		return nil
	}
	if boot == "" {
		// Four nodes restoring their memory at once keep the host's disk
		// busy: the first handshake timed out after 10 s there.
		return l.untilOK(ctx, clock)
	}
	// Snapshot only a fully started system, so every resume is identical.
	// The SSH handshake itself can time out while another node is being
	// snapshotted (savevm stalls the host's disk): retry until the boot
	// timeout, as the port wait before did.
	var out string
	if err := l.untilOK(ctx, func() (err error) {
		if out, err = host.Output(ctx, c, "systemctl is-system-running --wait || true"); err != nil {
			return fmt.Errorf("%s: waiting for systemd: %w", n.Name, err)
		}
		return nil
	}); err != nil {
		return err
	}
	if s := strings.TrimSpace(out); s != "running" && s != "degraded" {
		return fmt.Errorf("%s: systemd is %q after boot", n.Name, s)
	}
	if err := clock(); err != nil {
		return err
	}
	host.Output(ctx, c, "sync")
	c.Close()
	l.logf("%s: booted (%s); saving snapshot %q", n.Name, strings.TrimSpace(out), boot)
	return l.savevm(ctx, n.Name, boot)
}

// untilOK retries fn every 3 s until it succeeds or ctx ends.
func (l *Lab) untilOK(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return err
		}
		l.logf("%v (retrying)", err)
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
	}
}
