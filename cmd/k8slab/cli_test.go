package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/kubespray"
	"github.com/k8slab/k8slab/internal/lock"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/topology"
	"github.com/k8slab/k8slab/topology/labtest"
)

var binPath string

func TestMain(m *testing.M) {
	if os.Getenv("K8SLAB_PLAIN_FANOUT") != "" {
		os.Exit(plainFanout()) // a benchmark's child process
	}
	dir, err := os.MkdirTemp("", "k8slab-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "k8slab")
	// K8SLAB_TEST_BIN: a binary built beforehand, so an hour-long VM run
	// (go test -c) does not pick up source edited while it starts.
	if b := os.Getenv("K8SLAB_TEST_BIN"); b != "" {
		binPath = b
	} else if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs the real binary; inside the lab's workstation namespace when
// lab is given, as `k8slab lab exec` would.
func runCLI(t testing.TB, lab *topology.Lab, env []string, args ...string) result {
	t.Helper()
	cmd := cliCmd(t, lab, env, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{so.String(), se.String(), code}
}

// cliCmd is the k8slab command line, inside the lab's workstation
// namespace when there is a lab.
func cliCmd(t testing.TB, lab *topology.Lab, env []string, args ...string) *exec.Cmd {
	return labCmd(t, lab, env, append([]string{binPath}, args...)...)
}

// labCmd runs any program as cliCmd runs k8slab (scripts that call it).
func labCmd(t testing.TB, lab *topology.Lab, env []string, argv ...string) *exec.Cmd {
	if lab != nil {
		argv = append([]string{"ip", "netns", "exec", lab.NS(topology.WorkstationName)}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	// The workstation's lock directory is the user's: a test that took a
	// lock there could refuse the user's own run, and a run of the user's
	// made a bad-input test answer "another run holds the lock". Each test
	// has its own (env may still give one).
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK=", "HOME="+testHome(t), "K8SLAB_LOCK_DIR="+filepath.Join(testHome(t), "locks"))
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// homes holds one HOME per test: every command of a test finds what the
// ones before it left there, as a user's would (~/.cache/k8slab's
// bundle checksums: a fresh HOME per command re-hashed the whole bundle,
// seconds, each time).
var homes sync.Map

func testHome(t testing.TB) string {
	if d, ok := homes.Load(t); ok {
		return d.(string)
	}
	d := t.TempDir()
	homes.Store(t, d)
	t.Cleanup(func() { homes.Delete(t) })
	return d
}

// labEnv is what `k8slab lab exec` sets, plus a private log dir.
func labEnv(t testing.TB, lab *topology.Lab) (env []string, logDir string) {
	logDir = t.TempDir()
	return []string{
		"K8SLAB_NODES=" + strings.Join(lab.Spec.NodeAddrs(), ","),
		"K8SLAB_SSH_KEY=" + lab.KeyFile(),
		"K8SLAB_KNOWN_HOSTS=" + filepath.Join(t.TempDir(), "known_hosts"),
		"K8SLAB_LOG_DIR=" + logDir,
		// Labs of parallel tests share node addresses: each its own locks.
		"K8SLAB_LOCK_DIR=" + t.TempDir(),
	}, logDir
}

func TestCLIOnLab(t *testing.T) {
	lab := labtest.Up(t)
	env, logDir := labEnv(t, lab)

	t.Run("exec prints each node's output prefixed, and a summary", func(t *testing.T) {
		r := runCLI(t, lab, env, "exec", "--", "uname", "-n")
		if r.code != 0 {
			t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		for addr, name := range map[string]string{"172.31.3.11": "kube-node1", "172.31.4.12": "kube-node4"} {
			if !strings.Contains(r.stdout, "["+addr+"] "+name+"\n") {
				t.Errorf("stdout lacks %s's line:\n%s", addr, r.stdout)
			}
		}
		if !strings.Contains(r.stdout, "4 hosts, 0 failed") {
			t.Errorf("no summary:\n%s", r.stdout)
		}
	})

	t.Run("facts as JSON", func(t *testing.T) {
		r := runCLI(t, lab, env, "facts", "--output", "json")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		var rep struct {
			run.Report
			Hosts []struct {
				Host   string `json:"host"`
				Status string `json:"status"`
				Data   struct {
					Facts struct {
						Hostname      string `json:"hostname"`
						CgroupVersion int    `json:"cgroup_version"`
						DefaultAddr   string `json:"default_addr"`
						CPUs          int    `json:"cpus"`
					} `json:"facts"`
				} `json:"data"`
			} `json:"hosts"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("stdout is not one JSON document: %v\n%s", err, r.stdout)
		}
		if len(rep.Hosts) != 4 || !rep.OK || rep.Version != run.ReportVersion {
			t.Fatalf("report: %+v", rep)
		}
		for _, h := range rep.Hosts {
			f := h.Data.Facts
			if h.Status != "ok" || !strings.HasPrefix(f.Hostname, "kube-node") || f.CgroupVersion != 2 || f.DefaultAddr != h.Host+"/24" || f.CPUs < 1 {
				t.Errorf("%s: %+v", h.Host, h)
			}
		}
	})

	t.Run("one failing node: exit 1, the others succeed", func(t *testing.T) {
		r := runCLI(t, lab, env, "exec", "--output", "json", "--", `case $(uname -n) in kube-node3) echo broken >&2; exit 3;; esac; echo fine`)
		if r.code != 1 {
			t.Fatalf("exit %d, want 1: %s", r.code, r.stderr)
		}
		var rep run.Report
		json.Unmarshal([]byte(r.stdout), &rep)
		for _, h := range rep.Hosts {
			want := run.OK
			if h.Host == "172.31.4.11" {
				want = run.Failed
				if h.ExitCode != 3 || !strings.Contains(h.Error, "172.31.4.11: exit status 3: broken") {
					t.Errorf("node3: exit %d, error %q", h.ExitCode, h.Error)
				}
			}
			if h.Status != want {
				t.Errorf("%s: %s, want %s", h.Host, h.Status, want)
			}
		}
	})

	t.Run("password never reaches logs, JSON or terminal", func(t *testing.T) {
		// No key at all (and an empty $HOME): only the password can log in.
		var pwEnv []string
		for _, e := range env {
			if !strings.HasPrefix(e, "K8SLAB_SSH_KEY=") {
				pwEnv = append(pwEnv, e)
			}
		}
		pwEnv = append(pwEnv, "K8SLAB_SSH_PASSWORD="+lab.Spec.Login.RootPassword)
		r := runCLI(t, lab, pwEnv, "exec", "--output", "json", "--", "echo", "the password is", lab.Spec.Login.RootPassword)
		if r.code != 0 {
			t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
		}
		all := r.stdout + r.stderr
		filepath.Walk(logDir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				b, _ := os.ReadFile(p)
				all += string(b)
			}
			return nil
		})
		if strings.Contains(all, lab.Spec.Login.RootPassword) {
			t.Errorf("password %q found in output or logs", lab.Spec.Login.RootPassword)
		}
		if !strings.Contains(r.stdout, "the password is "+run.Mask) {
			t.Errorf("expected the masked echo in JSON:\n%s", r.stdout)
		}
	})

	t.Run("a terminal gets one live line per node", func(t *testing.T) {
		// script(1) gives k8slab a real pseudo-terminal.
		r := runCLI(t, lab, env, "exec", "--", "sleep", "0.5")
		plain := r.stderr
		cmd := exec.Command("ip", "netns", "exec", lab.NS(topology.WorkstationName),
			"script", "-qec", binPath+" exec -- sleep 0.5", "/dev/null")
		cmd.Env = append(append(os.Environ(), "SSH_AUTH_SOCK=", "HOME="+t.TempDir()), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		tty := string(out)
		if !strings.Contains(tty, "\x1b[4A") || !strings.Contains(tty, "\x1b[2K172.31.4.12") {
			t.Errorf("no in-place redraw of 4 node lines on a terminal:\n%q", tty)
		}
		if strings.Contains(plain, "\x1b[") || !strings.Contains(plain, "172.31.4.12: exec: ok in") {
			t.Errorf("without a terminal, want plain lines:\n%q", plain)
		}
	})

	t.Run("a run lock held by another run: exit 4 at once; --force-unlock clears it", func(t *testing.T) {
		// Another workstation's run holds kube-node3 (namespace nodes keep
		// k8slab state in their own directory: K8SLAB_STATE_DIR).
		other := `mkdir -p "$K8SLAB_STATE_DIR" && printf 'id=other\nworkstation=other-ws\npid=42\nstart_ticks=1\nstarted=2026-11-26T10:00:00Z\ncommand=install\n' > "$K8SLAB_STATE_DIR/lock"`
		if r := runCLI(t, lab, env, "exec", "--nodes", "172.31.4.11", "--", other); r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		start := time.Now()
		r := runCLI(t, lab, env, "install", "--only", "preflight")
		took := time.Since(start)
		if r.code != exitLocked || !strings.Contains(r.stderr, "172.31.4.11: k8slab install (pid 42 on other-ws, since 2026-11-26T10:00:00Z)") {
			t.Fatalf("exit %d, want %d naming the holder:\n%s", r.code, exitLocked, r.stderr)
		}
		t.Logf("refused through the node locks in %s", took) // the fast path is the workstation's copy (below)
		locks := func() string {
			r := runCLI(t, lab, env, "exec", "--", `cat "$K8SLAB_STATE_DIR/lock" 2>/dev/null | grep ^id= || echo none`)
			return r.stdout
		}
		if l := locks(); strings.Count(l, "none") != 3 || !strings.Contains(l, "[172.31.4.11] id=other") {
			t.Errorf("after a refused run, locks are:\n%s", l)
		}
		r = runCLI(t, lab, env, "install", "--only", "preflight", "--force-unlock")
		if r.code == exitLocked {
			t.Fatalf("--force-unlock: still locked:\n%s", r.stderr)
		}
		// Namespace nodes share this machine's filesystem: preflight refuses.
		if r.code != exitFailed || !strings.Contains(r.stderr, "172.31.3.11: a namespace-lab node shares this workstation's filesystem") {
			t.Errorf("install on namespace nodes: exit %d\n%s", r.code, r.stderr)
		}
		// The refusal is a failed run in every form a script reads: the
		// JSON report, the summary line and report summary.
		rj := runCLI(t, lab, env, "install", "--only", "preflight", "--output", "json")
		var rep struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal([]byte(rj.stdout), &rep); err != nil || rj.code != exitFailed || rep.OK || !strings.Contains(rep.Error, "preflight") {
			t.Errorf("refused install --output json: exit %d, ok %v, error %q (%v)\n%s", rj.code, rep.OK, rep.Error, err, rj.stdout)
		}
		if !strings.Contains(r.stdout, "run FAILED") || strings.Contains(r.stdout, "shares this workstation's filesystem") {
			t.Errorf("refused install: the summary must say the run failed, and leave the refusal to stderr (once):\n%s", r.stdout)
		}
		reports := filepath.Join(t.TempDir(), "refused.json")
		if err := os.WriteFile(reports, []byte(rj.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
		if rs := runCLI(t, nil, nil, "report", "summary", reports, reports); rs.code != exitFailed || !strings.Contains(rs.stdout, "2 runs, 2 failed") {
			t.Errorf("report summary of two refused installs: exit %d\n%s", rs.code, rs.stdout)
		}
		// The time before the first phase is accounted for in the log.
		if !strings.Contains(r.stderr, "run lock taken on 4 nodes in ") {
			t.Errorf("the log does not say how long the node locks took:\n%s", r.stderr)
		}
		if l := locks(); strings.Count(l, "none") != 4 {
			t.Errorf("the run did not release its lock:\n%s", l)
		}
	})

	t.Run("a run from this workstation: refused by the local lock before any SSH", func(t *testing.T) {
		var dir string
		for _, e := range env {
			if v, ok := strings.CutPrefix(e, "K8SLAB_LOCK_DIR="); ok {
				dir = v
			}
		}
		// This test process stands in for a live k8slab run.
		me := lock.Me("live-run", "install", time.Now())
		release, err := lock.AcquireLocal(dir, []string{"172.31.4.12"}, me, lock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		// "At once" is checked by order, not by a clock: the refusal comes
		// before any SSH and before the bundle's checksums (seconds on a
		// cold cache), so an --artifacts dir without a manifest, bad input
		// (exit 2) when nobody holds the lock, is not even looked at.
		start := time.Now()
		r := runCLI(t, lab, env, "install", "--only", "preflight", "--artifacts", t.TempDir())
		took := time.Since(start)
		if r.code != exitLocked || !strings.Contains(r.stderr, fmt.Sprintf("172.31.4.12: k8slab install (pid %d on ", os.Getpid())) {
			t.Fatalf("exit %d, want %d naming this process:\n%s", r.code, exitLocked, r.stderr)
		}
		t.Logf("refused in %s", took)
		release()
		if r := runCLI(t, lab, env, "install", "--only", "preflight", "--artifacts", t.TempDir()); r.code != exitBadInput || !strings.Contains(r.stderr, "--artifacts") {
			t.Errorf("unlocked, an empty --artifacts dir: exit %d, want %d\n%s", r.code, exitBadInput, r.stderr)
		}
	})

	t.Run("a run stopped by SIGTERM or a timeout reports ok: false", func(t *testing.T) {
		okOf := func(stdout string) (bool, []string) {
			var rep struct {
				OK    bool `json:"ok"`
				Hosts []struct {
					Status string `json:"status"`
				} `json:"hosts"`
			}
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatalf("report: %v\n%s", err, stdout)
			}
			var st []string
			for _, h := range rep.Hosts {
				st = append(st, h.Status)
			}
			return rep.OK, st
		}
		cmd := cliCmd(t, lab, env, "exec", "--output", "json", "--", "sleep", "30")
		var so bytes.Buffer
		cmd.Stdout = &so
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		if ok, st := okOf(so.String()); ok || err == nil {
			t.Errorf("SIGTERM: ok %v, exit %v, hosts %v", ok, err, st)
		}
		r := runCLI(t, lab, env, "exec", "--output", "json", "--timeout", "1s", "--", "sleep", "5")
		if ok, st := okOf(r.stdout); ok || r.code != exitFailed {
			t.Errorf("a command timing out: ok %v, exit %d, hosts %v", ok, r.code, st)
		}
	})

	t.Run("no cluster on the nodes: verify, kubeconfig and reinstall exit 6", func(t *testing.T) {
		for _, args := range [][]string{
			{"verify", "--api-wait", "5s"},
			{"kubeconfig", "--kubeconfig-dir", t.TempDir()},
			{"reinstall", "--yes"},
		} {
			r := runCLI(t, lab, env, args...)
			if r.code != exitNoCluster || !strings.Contains(r.stderr, "172.31.3.11") {
				t.Errorf("%s with no cluster: exit %d, want %d naming the control plane\n%s", args[0], r.code, exitNoCluster, tail(r.stderr, 10))
			}
		}
	})

	t.Run("reset: needs --yes without a terminal, and refuses namespace-lab nodes", func(t *testing.T) {
		r := runCLI(t, lab, env, "reset")
		if r.code != exitBadInput || !strings.Contains(r.stderr, "pass --yes") || !strings.Contains(r.stderr, "172.31.3.11:\n    - kubelet stopped; pods and their containers removed; kubeadm reset -f") {
			t.Errorf("reset without --yes: exit %d\n%s", r.code, r.stderr)
		}
		r = runCLI(t, lab, env, "reset", "--yes", "--no-backup")
		if r.code != exitFailed || strings.Count(r.stderr, "refused: a namespace-lab node shares the workstation's filesystem") < 4 {
			t.Errorf("reset on namespace nodes: exit %d\n%s", r.code, r.stderr)
		}
	})

	t.Run("lab status", func(t *testing.T) {
		r := runCLI(t, nil, nil, "lab", "status", "--name", lab.Spec.Name, "--output", "json")
		var st topology.Status
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || !st.Up || len(st.SSH) != 5 {
			t.Errorf("exit %d: %s %s", r.code, r.stdout, r.stderr)
		}
	})
}

func TestCLIBadInputTouchesNothing(t *testing.T) {
	logDir := t.TempDir()
	kh := filepath.Join(t.TempDir(), "known_hosts")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad address", []string{"exec", "--nodes", "172.31.3.11,172.31.3.311", "--", "true"}, `"172.31.3.311": invalid IPv4 address`},
		{"duplicate node", []string{"facts", "--nodes", "172.31.3.11,172.31.3.11"}, `node "172.31.3.11" is listed twice`},
		{"no nodes", []string{"facts"}, "--nodes: no nodes given"},
		{"bad policy", []string{"facts", "--nodes", "10.0.0.1", "--host-key-policy", "yolo"}, "--host-key-policy"},
		{"bad output", []string{"facts", "--nodes", "10.0.0.1", "--output", "yaml"}, "--output"},
		{"missing key", []string{"facts", "--nodes", "10.0.0.1", "--ssh-key", "/nonexistent/key"}, "--ssh-key"},
		{"no command", []string{"exec", "--nodes", "10.0.0.1"}, "no command given"},
		{"bad jump", []string{"facts", "--nodes", "10.0.0.1", "--jump", "a b"}, "--jump"},
		{"unknown flag", []string{"facts", "--frobnicate"}, "frobnicate"},
		{"install: even etcd", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--etcd", "172.31.3.11,172.31.3.12"}, "etcd: 2 members"},
		{"install: etcd not a node", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--etcd", "172.31.3.11,172.31.3.12,10.0.0.9"}, "10.0.0.9"},
		{"install: control plane not a node", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--control-plane", "10.9.9.9"}, `control-plane: "10.9.9.9" is not one of --nodes`},
		{"install: CIDRs overlap", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--service-cidr", "172.31.128.0/18", "--pod-cidr", "172.31.160.0/19"}, "overlap"},
		{"install: service CIDR holds nodes", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--service-cidr", "172.31.3.0/24"}, "service-cidr 172.31.3.0/24 contains node address 172.31.3.11"},
		{"install: pod CIDR too small", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--pod-cidr", "172.31.128.0/28"}, "pod-cidr"},
		{"install: unknown Kubernetes", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--kubernetes-version", "v1.99.0"}, "kubernetes-version"},
		{"install: unknown Calico", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--calico-version", "v9.9.9"}, "calico"},
		{"install: not a bundle", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--artifacts", "/nonexistent"}, "--artifacts /nonexistent"},
		{"install: --only names no phase", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--only", "jion"}, `--only: "jion" is not a phase`},
		{"install: negative join parallelism", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--join-parallel", "-1"}, "--join-parallel"},
		{"verify: zero pod timeout", []string{"verify", "--nodes", "172.31.3.11", "--pod-timeout", "0s"}, "--pod-timeout: must be positive"},
		{"verify: zero API wait", []string{"verify", "--nodes", "172.31.3.11", "--api-wait", "0s"}, "--api-wait: must be positive"},
		{"install: bad mirror", []string{"install", "--nodes", "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12", "--mirror", "nope"}, `--mirror "nope"`},
		{"install: as-per-rack without racks", []string{"install", "--nodes", "172.31.3.11", "--calico-bgp", "as-per-rack"}, "calico bgp as-per-rack needs the racks' routers (--rack NAME=ROUTER@ASN, or --lab FILE)"},
		{"install: as-per-rack with VXLAN", []string{"install", "--nodes", "172.31.3.11", "--calico-bgp", "as-per-rack", "--rack", "leaf1=172.31.3.1@65001", "--calico-encapsulation", "VXLAN"}, "encapsulation must be None"},
		{"install: bad rack", []string{"install", "--nodes", "172.31.3.11", "--calico-bgp", "as-per-rack", "--rack", "leaf1=172.31.3.1"}, `--rack: "leaf1=172.31.3.1" is not NAME=ROUTER@ASN`},
		{"install: racks two ways", []string{"install", "--nodes", "172.31.3.11", "--calico-bgp", "as-per-rack", "--rack", "leaf1=172.31.3.1@65001", "--lab", "../../testdata/labs/gns3-reference.yaml"}, "--rack and --lab"},
		{"install: racks without as-per-rack", []string{"install", "--nodes", "172.31.3.11", "--rack", "leaf1=172.31.3.1@65001"}, "calico racks: only used with calico bgp as-per-rack (bgp is mesh)"},
		{"install: unknown BGP mode", []string{"install", "--nodes", "172.31.3.11", "--calico-bgp", "full-mesh"}, `calico-bgp: "full-mesh"`},
		{"install: inventory with flannel", []string{"install", "-i", "../../testdata/kubespray/bad-flannel/inventory.cfg"}, "k8s-cluster.yml:3: kube_network_plugin: flannel: k8slab installs Calico only"},
		{"install: inventory and other nodes", []string{"install", "-i", "../../testdata/kubespray/seed/inventory.cfg", "--nodes", "10.0.0.1"}, "--nodes and --inventory name different hosts"},
		{"install: inventory and cluster file", []string{"install", "-i", "../../testdata/kubespray/seed/inventory.cfg", "-f", "k8slab.yaml"}, "--file and --inventory"},
		{"import: no inventory", []string{"import", "kubespray"}, "import kubespray: give one inventory"},
		{"fabric config: no such router", []string{"fabric", "config", "--router", "spine"}, `--router: "spine" has no rack of nodes (routers with racks: leaf1, leaf2)`},
		{"fabric config: bad pod CIDR", []string{"fabric", "config", "--pod-cidr", "172.31.128.1/18"}, `--pod-cidr: "172.31.128.1/18"`},
		{"fabric config: bad dialect", []string{"fabric", "config", "--dialect", "frr"}, `--dialect: "frr" is not bird2 or bird1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, nil, []string{"K8SLAB_LOG_DIR=" + logDir, "K8SLAB_KNOWN_HOSTS=" + kh}, tt.args...)
			if r.code != exitBadInput || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, exitBadInput, tt.want)
			}
		})
	}
	if entries, _ := os.ReadDir(logDir); len(entries) > 0 {
		t.Errorf("a refused run created %d run directories", len(entries))
	}
}

// TestCLIImportKubespray: the seed's inventory becomes a cluster file
// (its ignored groups as comments) that describes the same cluster as
// installing from the inventory itself; an existing file is not
// overwritten.
func TestCLIImportKubespray(t *testing.T) {
	out := filepath.Join(t.TempDir(), "k8slab.yaml")
	r := runCLI(t, nil, nil, "import", "kubespray", "../../testdata/kubespray/seed/inventory.cfg", "-o", out)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "#   ../../testdata/kubespray/seed/inventory.cfg:27: [vault]: k8slab generates its own PKI") {
		t.Errorf("the ignored list is not in the file:\n%s", b)
	}
	fromFile, err := cluster.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := kubespray.Load("../../testdata/kubespray/seed/inventory.cfg")
	if err != nil {
		t.Fatal(err)
	}
	fromFile.Default()
	inv.Config.Default()
	if d := inv.Config.Diff(fromFile); len(d) > 0 {
		t.Errorf("the imported file differs from the inventory: %v", d)
	}
	if r := runCLI(t, nil, nil, "import", "kubespray", "../../testdata/kubespray/seed/inventory.cfg", "-o", out); r.code != exitBadInput || !strings.Contains(r.stderr, "exists") {
		t.Errorf("overwriting %s: exit %d %s", out, r.code, r.stderr)
	}
}

// TestCLIFabricConfig: the router side for the reference lab, as the
// golden files in testdata/fabric hold it, one block per leaf.
func TestCLIFabricConfig(t *testing.T) {
	r := runCLI(t, nil, nil, "fabric", "config", "--pod-cidr", "172.31.128.0/18")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var want string
	for i, leaf := range []string{"leaf1", "leaf2"} {
		b, err := os.ReadFile("../../testdata/fabric/gns3-reference/" + leaf + ".bird2.conf")
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			want += "\n"
		}
		want += "# ===== router " + leaf + " =====\n" + string(b)
	}
	if r.stdout != want {
		t.Errorf("fabric config:\n%s\nwant:\n%s", r.stdout, want)
	}
	one := runCLI(t, nil, nil, "fabric", "config", "--pod-cidr", "172.31.128.0/18", "--router", "leaf2", "--dialect", "bird1")
	if one.code != 0 || strings.Contains(one.stdout, "leaf1") || !strings.Contains(one.stdout, "bgp_next_hop = 172.31.4.1") {
		t.Errorf("--router leaf2 --dialect bird1: exit %d\n%s", one.code, one.stdout)
	}
}

func TestCLIVersionAndCompletion(t *testing.T) {
	if r := runCLI(t, nil, nil, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "k8slab ") {
		t.Errorf("version: %+v", r)
	}
	if r := runCLI(t, nil, nil, "completion", "bash"); r.code != 0 || !strings.Contains(r.stdout, "complete -o bashdefault") {
		t.Errorf("completion: %+v", r)
	}
	if r := runCLI(t, nil, nil, "lab", "--generate-bash-completion"); !strings.Contains(r.stdout, "up") || !strings.Contains(r.stdout, "status") {
		t.Errorf("completion candidates for lab: %q", r.stdout)
	}
}

// TestPlanFollowsFlags: plan describes the rollout install will run with
// the same --wait, and its JSON names cluster-wide steps "cluster".
func TestPlanFollowsFlags(t *testing.T) {
	nodes := "--nodes=172.31.3.11,172.31.3.12"
	if r := runCLI(t, nil, nil, "plan", nodes); r.code != 0 || !strings.Contains(r.stdout, "rollout: wait up to 20m0s") || strings.Contains(r.stdout, "not waiting") {
		t.Errorf("plan (--wait by default): exit %d\n%s", r.code, r.stdout)
	}
	if r := runCLI(t, nil, nil, "plan", nodes, "--wait=false"); !strings.Contains(r.stdout, "(--wait=false: not waiting)") {
		t.Errorf("plan --wait=false:\n%s", r.stdout)
	}
	// Nodes register with the pod-network taint only when this run's
	// rollout waits, and so lifts it.
	const gated = "registered with k8slab.dev/pod-network-unavailable:NoSchedule"
	for _, c := range []struct {
		args []string
		want int // join and control-plane lines that say so
	}{{nil, 2}, {[]string{"--wait=false"}, 0}, {[]string{"--only", "join"}, 0}, {[]string{"--only", "join", "--only", "rollout"}, 1}} {
		r := runCLI(t, nil, nil, append([]string{"plan", nodes}, c.args...)...)
		if got := strings.Count(r.stdout, gated); r.code != 0 || got != c.want {
			t.Errorf("plan %v: exit %d, %d steps say %q, want %d\n%s", c.args, r.code, got, gated, c.want, r.stdout)
		}
	}
	r := runCLI(t, nil, nil, "plan", nodes, "--output", "json")
	var plan map[string][]string
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil {
		t.Fatalf("plan --output json: %v\n%s", err, r.stdout)
	}
	if _, empty := plan[""]; empty || len(plan["cluster"]) == 0 || len(plan["172.31.3.11"]) == 0 {
		t.Errorf("plan JSON keys: want cluster and the nodes, no empty key: %v", plan)
	}
}

// TestCLIUsageErrors: a mistyped flag or command is one line on stderr
// naming what was meant, exit 2, nothing on stdout; --version works; the
// help of --only lists the real phases in their real order.
func TestCLIUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--node", "172.31.3.11"}, "k8slab: unknown flag --node (did you mean --nodes?)\n"},
		{[]string{"fact"}, "k8slab: unknown command fact, did you mean facts? (k8slab --help lists them)\n"},
		{[]string{"lab", "up", "--containrs"}, "k8slab: unknown flag --containrs (did you mean --containers?)\n"},
	} {
		r := runCLI(t, nil, nil, c.args...)
		if r.code != exitBadInput || r.stderr != c.want || r.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %d bytes; want exit 2 and %q", c.args, r.code, r.stderr, len(r.stdout), c.want)
		}
	}
	if r := runCLI(t, nil, nil, "lab", "exec", "--name", "nosuchlab", "--", "true"); r.code != exitFailed || r.stderr != "k8slab: the lab nosuchlab is not up (k8slab lab up)\n" {
		t.Errorf("lab exec with the lab down: exit %d %q", r.code, r.stderr)
	}
	if r := runCLI(t, nil, nil, "plan", "--nodes", "172.31.3.11", "--artifacts", t.TempDir()); r.code != exitBadInput || !strings.Contains(r.stderr, "make bundle") {
		t.Errorf("--artifacts without bundle.json: exit %d %q", r.code, r.stderr)
	}
	// With --output json, refusals are JSON too, naming the field.
	rj := runCLI(t, nil, nil, "install", "--nodes", "172.31.3.11", "--pod-cidr", "172.31.64.0/8", "--output", "json")
	var refused struct {
		OK       bool `json:"ok"`
		ExitCode int  `json:"exit_code"`
		Error    struct{ Field, Message string }
	}
	if err := json.Unmarshal([]byte(rj.stdout), &refused); err != nil || rj.code != exitBadInput || refused.OK || refused.ExitCode != 2 ||
		refused.Error.Field != "pod-cidr" || !strings.Contains(refused.Error.Message, "did you mean 172.0.0.0/8?") {
		t.Errorf("input error with --output json: exit %d, %+v (%v)\n%s", rj.code, refused, err, rj.stdout)
	}
	// A node no command ran on has no exit code: the error says why.
	ru := runCLI(t, nil, []string{"HOME=" + t.TempDir(), "SSH_AUTH_SOCK="}, "exec", "--nodes", "127.0.0.9", "--connect-timeout", "2s", "--", "true")
	if !strings.Contains(ru.stdout, "127.0.0.9  failed  -     ") || strings.Contains(ru.stdout, " -1 ") {
		t.Errorf("an unreachable node's line:\n%s", ru.stdout)
	}
	if r := runCLI(t, nil, nil, "--version"); r.code != 0 || !strings.HasPrefix(r.stdout, "k8slab version ") {
		t.Errorf("--version: exit %d %q", r.code, r.stdout)
	}
	r := runCLI(t, nil, nil, "install", "--help")
	if !strings.Contains(r.stdout, "of: "+strings.Join(phaseNames(), ", ")) || !strings.Contains(r.stdout, "dns, calico, join, peering, rollout, kubeconfig") {
		t.Errorf("--only's help does not list the phases in order:\n%s", r.stdout)
	}
}

// TestCLIRefusesLabAddressesOutsideTheLab: a node command aimed, from
// outside a lab's namespaces, at an address only that lab has is refused
// before any dial, pointing to lab exec. The lab here is a state file
// whose one address is on loopback, so even a regression that dialled it
// would send nothing off this machine.
func TestCLIRefusesLabAddressesOutsideTheLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writes a lab state under " + topology.DefaultStateRoot + " (root)")
	}
	name := fmt.Sprintf("t%d-outside", os.Getpid())
	dir := filepath.Join(topology.DefaultStateRoot, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	state := fmt.Sprintf(`{"name": %q, "namespaces": [], "procs": [], "addrs": ["127.31.3.11"]}`, name)
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(state), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, nil, nil, "exec", "--nodes", "127.31.3.11", "--connect-timeout", "1s", "--", "true")
	if r.code != exitBadInput || !strings.Contains(r.stderr, "127.31.3.11 is a node of the lab "+name) || !strings.Contains(r.stderr, "k8slab lab exec -- k8slab exec") {
		t.Errorf("exit %d, want 2 pointing to lab exec:\n%s", r.code, r.stderr)
	}
}

// TestCLIHelpShowsEachCommandsOwnFlags: commands that do not install do
// not offer install's flags, and every help groups flags by subject.
func TestCLIHelpShowsEachCommandsOwnFlags(t *testing.T) {
	for _, cmd := range []string{"reset", "verify", "kubeconfig", "plan", "install"} {
		r := runCLI(t, nil, nil, cmd, "--help")
		for _, heading := range []string{"Connection", "Cluster", "Output"} {
			if !strings.Contains(r.stdout, "   "+heading+"\n") {
				t.Errorf("%s --help has no %s group", cmd, heading)
			}
		}
		installOnly := strings.Contains(r.stdout, "--mirror") || strings.Contains(r.stdout, "--join-parallel") || strings.Contains(r.stdout, "--fix-machine-id") || strings.Contains(r.stdout, "--only")
		if want := cmd == "plan" || cmd == "install"; installOnly != want {
			t.Errorf("%s --help lists install's own flags: %v, want %v", cmd, installOnly, want)
		}
	}
}

// TestCompletionFlagsAndValues asks the binary what the completion
// scripts ask it (the words so far, the one being completed last).
func TestCompletionFlagsAndValues(t *testing.T) {
	for _, c := range []struct {
		words     []string
		want, not []string
	}{
		{[]string{"install", "--calico-encapsulation", ""}, []string{"IPIP", "VXLAN", "None"}, nil},
		{[]string{"install", "--only", ""}, phaseNames(), nil},
		{[]string{"verify", "--host-key-policy", "a"}, []string{"strict", "accept-new", "insecure"}, nil},
		{[]string{"reset", "--ho"}, []string{"--host-key-policy", "--yes"}, []string{"--mirror", "--join-parallel"}},
		{[]string{"lab", "u"}, []string{"up", "down", "status", "exec"}, nil},
		{[]string{"fa"}, []string{"facts", "install", "verify"}, nil},
	} {
		r := runCLI(t, nil, nil, append(c.words, "--generate-bash-completion")...)
		got := strings.Fields(r.stdout)
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("%q: completions %v lack %s", c.words, got, w)
			}
		}
		for _, w := range c.not {
			if slices.Contains(got, w) {
				t.Errorf("%q: completions %v offer %s", c.words, got, w)
			}
		}
	}
}
