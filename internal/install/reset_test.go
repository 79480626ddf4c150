package install

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
	"github.com/k8slab/k8slab/internal/run"
	nodescript "github.com/k8slab/k8slab/scripts/node"
)

// TestCNIConfReset runs reset's CNI-configuration snippets with this
// machine's shell on a stand-in for /etc/cni/net.d: the files go, the
// directory (which containerd re-creates and watches) may stay, and the
// check names what is left.
func TestCNIConfReset(t *testing.T) {
	tests := []struct {
		name        string
		files       []string
		mkdir       bool
		wantRemoved bool
	}{
		{"Calico's configuration", []string{"10-calico.conflist", "calico-kubeconfig"}, true, true},
		{"a hidden file too", []string{".k8slab-tmp"}, true, true},
		{"empty directory, as containerd re-creates it: nothing to do", nil, true, false},
		{"no directory: nothing to do", nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "etc/cni/net.d")
			if tt.mkdir {
				must(t, os.MkdirAll(dir, 0o755))
			}
			for _, f := range tt.files {
				must(t, os.WriteFile(filepath.Join(dir, f), []byte("{}"), 0o644))
			}
			sh := func(step string) string {
				return runReset(t, []string{"K8SLAB_RESET_ROOT=" + root}, step)
			}
			if len(tt.files) > 0 {
				if left := sh("check_cni_conf"); strings.Count(left, "left=") != len(tt.files) {
					t.Errorf("check before the reset: %q", left)
				}
			}
			removed := sh("remove_cni_conf")
			if got := strings.Contains(removed, "removed=CNI configuration"); got != tt.wantRemoved {
				t.Errorf("removed: %q, want removed %v", removed, tt.wantRemoved)
			}
			if left := sh("check_cni_conf"); left != "" {
				t.Errorf("left after the reset: %q", left)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestResetPhases pins the order that keeps a backup possible: external
// etcd is snapshotted after Kubernetes is gone (a quiet etcd) and before
// its data goes; kubeadm reset takes a stacked etcd with it, so that one
// is snapshotted first. Each part names only the nodes it changes.
func TestResetPhases(t *testing.T) {
	nodes := []string{"172.31.3.11", "172.31.3.12", "172.31.4.11", "172.31.4.12"}
	tests := []struct {
		name   string
		etcd   []string
		all    bool
		phases []string
		// nodes each ResetNodes phase acts on, by phase name
		acts map[string]int
	}{
		// The record goes last: a reset that failed somewhere keeps it.
		{"external etcd", nodes[:3], false, []string{"reset", "etcd-backup", "reset-etcd", "forget"}, map[string]int{"reset": 4, "reset-etcd": 3}},
		{"external etcd, --all", nodes[:3], true, []string{"reset", "etcd-backup", "reset-etcd", "reset-provisioned", "forget"}, map[string]int{"reset": 4, "reset-etcd": 3, "reset-provisioned": 4}},
		{"stacked etcd", nodes[:1], false, []string{"etcd-backup", "reset", "forget"}, map[string]int{"reset": 4}},
		{"stacked etcd, --all", nodes[:1], true, []string{"etcd-backup", "reset", "reset-provisioned", "forget"}, map[string]int{"reset": 4, "reset-provisioned": 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &cluster.Config{Nodes: nodes, ControlPlane: nodes[0], Etcd: tt.etcd, Workers: nodes}
			var names []string
			for _, p := range ResetPhases(&Context{Cluster: cfg}, ResetOptions{All: tt.all}) {
				names = append(names, p.Name())
				if r, ok := p.(*ResetNodes); ok {
					if got := len(r.nodes()); got != tt.acts[p.Name()] {
						t.Errorf("%s acts on %d nodes (%v), want %d", p.Name(), got, r.nodes(), tt.acts[p.Name()])
					}
					if got := len(r.Plan()); got == 0 {
						t.Errorf("%s plans nothing", p.Name())
					}
				}
			}
			if !slices.Equal(names, tt.phases) {
				t.Errorf("phases %v, want %v", names, tt.phases)
			}
		})
	}
}

// TestResetScriptParses has the shell check the script as sent, and
// refuse a step it does not have.
func TestResetScriptParses(t *testing.T) {
	if out, err := exec.Command("sh", "-n", "-c", nodescript.Command("reset.sh", "-c", "unix:///x", "kubernetes")).CombinedOutput(); err != nil {
		t.Errorf("%v\n%s", err, out)
	}
	out, err := exec.Command("sh", "-c", nodescript.Command("reset.sh", "rm_everything")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no step rm_everything") {
		t.Errorf("an unknown step: %v %q", err, out)
	}
}

// TestResetRemovesPodsBeforeKubeadm: kubeadm reset's own CRI calls give
// each sandbox 2 s, so the pods are stopped (by crictl, with time) and
// the kubelet that would restart them is stopped before it runs.
//
// The kubelet is killed before the pods' processes are (it would restart
// them), and those before crictl runs (on the loaded control plane they
// slowed every crictl call).
func TestResetRemovesPodsBeforeKubeadm(t *testing.T) {
	wantInOrder(t, "kubernetes", resetStep(t, "kubernetes"), "stop_kubelet", "remove_pods", "kubeadm_reset")
	wantInOrder(t, "stop_kubelet", resetStep(t, "stop_kubelet"),
		"systemctl kill --signal=SIGKILL kubelet",
		"systemctl stop kubelet",
		"systemctl kill --signal=SIGKILL kubepods.slice")
	wantInOrder(t, "remove_pods", resetStep(t, "remove_pods"), "crictl pods -q", "rmp -fa")
}

// wantInOrder fails unless every step appears in script, each after the
// one before it.
func wantInOrder(t *testing.T, name, script string, steps ...string) {
	t.Helper()
	last := -1
	for _, s := range steps {
		i := strings.Index(script, s)
		if i < 0 || i < last {
			t.Errorf("%s: %q at %d, the step before it at %d; want the order %q", name, s, i, last, steps)
			return
		}
		last = i
	}
}

// TestResetEtcdKillsThenReloadsOnce: etcd is killed before it is
// disabled and its files go, and systemd is reloaded once, after them
// (the script itself cannot run here: it acts on this machine's paths).
func TestResetEtcdKillsThenReloadsOnce(t *testing.T) {
	etcd := resetStep(t, "etcd")
	wantInOrder(t, "etcd", etcd,
		"systemctl kill --signal=SIGKILL etcd",
		"systemctl disable --now --no-reload etcd",
		"rm -rf /etc/systemd/system/etcd.service",
		"systemctl daemon-reload")
	if n := strings.Count(etcd, "daemon-reload"); n != 1 {
		t.Errorf("the etcd part reloads systemd %d times, want once", n)
	}
}

// TestLapTimer: a lap ends when the next lap= line arrives, however the
// output is cut into writes, and done closes the last one.
func TestLapTimer(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"one write", []string{"lap=a\nremoved=x\nlap=b\n"}, "a 1s, b 1s"},
		{"lines cut across writes", []string{"la", "p=a\nremo", "ved=x\nlap=", "b\n"}, "a 1s, b 1s"},
		{"no laps", []string{"removed=x\n"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := time.Unix(0, 0)
			l := &lapTimer{now: func() time.Time { clock = clock.Add(time.Second); return clock }}
			for _, w := range tt.writes {
				l.Write([]byte(w))
			}
			if got := strings.Join(l.done(), ", "); got != tt.want {
				t.Errorf("laps %q, want %q", got, tt.want)
			}
			if got := l.out.String(); got != strings.Join(tt.writes, "") {
				t.Errorf("output %q", got)
			}
		})
	}
}

// TestResetIPIPBusyModule_SimulatedTools runs reset's tunl0 removal and
// its check with stand-ins for ip, modprobe, udevadm and sleep (the real
// ones would change this machine's kernel). The stand-ins act as a node
// VM was seen to: naming tunl0 loads ipip (and queues a udev event), and
// ipip can come back after its removal — modelled as that event handled
// late, the likely cause. Reset must not make a tunl0 itself, must
// outlast a late reload, and must retry a module busy for a moment; one
// that stays busy is reported with modprobe's own words.
func TestResetIPIPBusyModule_SimulatedTools(t *testing.T) {
	tests := []struct {
		name      string
		state     []string // loaded: tunl0 exists; pending: udev has not handled it yet; reload: something loads ipip once after its removal
		busy      int      // how many modprobe -r calls fail first
		wantGone  bool
		wantLeft  string
		wantCalls int
	}{
		{"not loaded: not made by a lookup", nil, 0, false, "", 0},
		{"free at once", []string{"loaded"}, 0, true, "", 1},
		{"just made, udev not done", []string{"loaded", "pending"}, 0, true, "", 1},
		{"loaded again once after its removal", []string{"loaded", "reload"}, 0, true, "", 2},
		{"busy twice after the pods went", []string{"loaded"}, 2, true, "", 3},
		{"busy throughout", []string{"loaded"}, 100, false, "left=link tunl0 (modprobe -r ipip: modprobe: FATAL: Module ipip is in use.)", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tt.state {
				must(t, os.WriteFile(filepath.Join(dir, f), nil, 0o644))
			}
			// A queued udev event for a tunl0 that is gone looks it up
			// by name, which loads ipip again.
			udev := `if [ -e "$D/pending" ]; then rm -f "$D/pending"; [ -e "$D/loaded" ] || : > "$D/loaded"; fi`
			fakes := map[string]string{
				"ip": udev + `
if [ "$1" = -o ]; then [ -e "$D/loaded" ] && echo "5: tunl0@NONE: <NOARP> mtu 1480"; exit 0; fi
case " $* " in *" tunl0 "*) : > "$D/loaded"; : > "$D/pending";; esac
[ -e "$D/loaded" ]`,
				"udevadm": `[ "$1" = settle ] || exit 1
` + udev,
				"modprobe": `n=$(cat "$D/calls" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$D/calls"
if [ $n -gt ` + strconv.Itoa(tt.busy) + ` ]; then
	rm -f "$D/loaded"
	[ -e "$D/reload" ] && { rm -f "$D/reload"; : > "$D/pending"; }
	exit 0
fi
echo "modprobe: FATAL: Module ipip is in use." >&2; exit 1`,
				"sleep": "exit 0",
			}
			// Only the link lines of the check: the rest reads this
			// machine's paths.
			out := runWithStandIns(t, dir, fakes, nil, "remove_ipip", "check_links")
			calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
			n, _ := strconv.Atoi(strings.TrimSpace(string(calls)))
			gone := strings.Contains(out, "removed=link tunl0 (ipip module)")
			var left string
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "left=") {
					left = l
				}
			}
			if gone != tt.wantGone || left != tt.wantLeft || n != tt.wantCalls {
				t.Errorf("removed %v, %q, %d modprobe calls; want %v, %q, %d\n%s", gone, left, n, tt.wantGone, tt.wantLeft, tt.wantCalls, out)
			}
		})
	}
}

// TestResetPodRemoval_SimulatedCrictl runs reset's pod removal with a
// stand-in crictl (the real one would stop this machine's containers),
// against a stand-in root (K8SLAB_RESET_ROOT) with a CNI configuration
// directory and a loopback plugin. Each stand-in rmp waits until every
// pod's rmp has started, so pods removed one after the other show up as
// "serial"; it fails, as Calico's plugin did with the API server gone,
// unless the loopback-only network is what containerd has loaded then.
// The check that follows reports any sandbox left.
func TestResetPodRemoval_SimulatedCrictl(t *testing.T) {
	tests := []struct {
		name         string
		pods         string
		failOnce     string // a pod whose first rmp fails
		noLoopback   bool   // no loopback plugin on the node
		wantGone     bool
		wantFallback bool
		wantLeft     string
	}{
		{"no pods", "", "", false, false, false, ""},
		{"three pods at once", "p1 p2 p3", "", false, true, false, ""},
		{"a failed rmp gets the serial pass", "p1 p2 p3", "p2", false, true, true, ""},
		{"no loopback plugin: Calico's teardown fails, the check says so", "p1 p2", "", true, true, true, "left=2 pod sandboxes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "root")
			netd := filepath.Join(root, "etc", "cni", "net.d")
			must(t, os.MkdirAll(netd, 0o755))
			must(t, os.WriteFile(filepath.Join(netd, "10-calico.conflist"), []byte(`{"name":"k8s-pod-network"}`), 0o644))
			if !tt.noLoopback {
				must(t, os.MkdirAll(filepath.Join(root, "opt", "cni", "bin"), 0o755))
				must(t, os.WriteFile(filepath.Join(root, "opt", "cni", "bin", "loopback"), nil, 0o755))
			}
			for _, p := range strings.Fields(tt.pods) {
				must(t, os.WriteFile(filepath.Join(dir, "pod-"+p), nil, 0o644))
			}
			n := len(strings.Fields(tt.pods))
			crictl := `cd "$D"
[ "$1" = --timeout ] && shift 2
loaded() { cat "$R"/etc/cni/net.d/* 2>/dev/null | head -c 200 | grep -q '"k8slab-reset"'; }
case "$1 $2" in
"info ") loaded && echo '{"Name": "k8slab-reset"}'; exit 0;;
"pods -q") echo x >> listings; for f in pod-*; do [ -e "$f" ] && echo "${f#pod-}"; done; exit 0;;
"rmp -fa") echo x >> fallback; loaded || exit 1; rm -f pod-*; exit 0;;
"rmp -f") id=$3; touch "started-$id"
	i=0; while [ $(ls started-* | wc -l) -lt ` + strconv.Itoa(n) + ` ]; do
		i=$((i+1)); [ $i -gt 400 ] && { echo "$id" >> serial; break; }; sleep 0.05
	done
	loaded || exit 1
	if [ "$id" = "` + tt.failOnce + `" ] && [ ! -e "failed-$id" ]; then touch "failed-$id"; exit 1; fi
	rm -f "pod-$id"; exit 0;;
esac
exit 2`
			out := runWithStandIns(t, dir, map[string]string{"crictl": crictl}, []string{"K8SLAB_RESET_ROOT=" + root, "R=" + root}, "remove_pods")
			// crictl took seconds to start on the emulated VMs: one listing.
			if l, _ := os.ReadFile(filepath.Join(dir, "listings")); strings.Count(string(l), "x") != 1 {
				t.Errorf("crictl pods listed %d times, want once", strings.Count(string(l), "x"))
			}
			if serial, _ := os.ReadFile(filepath.Join(dir, "serial")); len(serial) > 0 {
				t.Errorf("pods removed one after the other: %q", serial)
			}
			left, _ := filepath.Glob(filepath.Join(dir, "pod-*"))
			_, ferr := os.Stat(filepath.Join(dir, "fallback"))
			gone := strings.Contains(out, "removed=pod sandboxes")
			if len(left) > 0 != (tt.wantLeft != "") || gone != tt.wantGone || (ferr == nil) != tt.wantFallback {
				t.Errorf("left %v, removed line %v, serial pass %v; want left %q, %v, %v\n%s", left, gone, ferr == nil, tt.wantLeft, tt.wantGone, tt.wantFallback, out)
			}
			// The offline network is gone again; Calico's stays for the
			// CNI configuration step to remove and check.
			if confs, _ := os.ReadDir(netd); len(confs) != 1 || confs[0].Name() != "10-calico.conflist" {
				t.Errorf("/etc/cni/net.d after the removal: %v", confs)
			}
			// The check names what is left.
			check := runWithStandIns(t, dir, nil, []string{"K8SLAB_RESET_ROOT=" + root, "R=" + root}, "check_pods")
			if !strings.Contains(check, tt.wantLeft) || tt.wantLeft == "" && strings.Contains(check, "left=") {
				t.Errorf("check_pods: %q, want %q", check, tt.wantLeft)
			}
		})
	}
}

// TestResetKubeadmUnits_SimulatedSystemctl runs the stop of k8slab's
// detached kubeadm units against a stand-in systemctl (the real one
// would act on this machine) that logs each call.
func TestResetKubeadmUnits_SimulatedSystemctl(t *testing.T) {
	tests := []struct {
		name      string
		running   string
		wantStop  string // the stop call's arguments, "" for none
		wantGone  []string
		wantCalls int
	}{
		{"nothing running", "", "", nil, 2},
		{"a join still running", "k8slab-kubeadm-join.service", "k8slab-kubeadm-join.service", []string{"running k8slab-kubeadm-join"}, 3},
		{"init and its second half", "k8slab-kubeadm-init.service k8slab-kubeadm-init-rest.service",
			"k8slab-kubeadm-init.service k8slab-kubeadm-init-rest.service",
			[]string{"running k8slab-kubeadm-init", "running k8slab-kubeadm-init-rest"}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			systemctl := `echo "$*" >> "$D/calls"
case "$1" in
list-units) for u in ` + tt.running + `; do echo "$u loaded active running k8slab"; done;;
esac
exit 0`
			out := runWithStandIns(t, dir, map[string]string{"systemctl": systemctl}, nil, "stop_kubeadm_units")
			b, _ := os.ReadFile(filepath.Join(dir, "calls"))
			calls := strings.Split(strings.TrimSpace(string(b)), "\n")
			var stop string
			for _, c := range calls {
				if a, ok := strings.CutPrefix(c, "stop "); ok {
					stop = a
				}
			}
			var gone []string
			for _, l := range strings.Split(out, "\n") {
				if g, ok := strings.CutPrefix(l, "removed="); ok {
					gone = append(gone, g)
				}
			}
			if len(calls) != tt.wantCalls || stop != tt.wantStop || !slices.Equal(gone, tt.wantGone) {
				t.Errorf("systemctl calls %q, stop %q, removed %q; want %d calls, stop %q, removed %q", calls, stop, gone, tt.wantCalls, tt.wantStop, tt.wantGone)
			}
			if last := calls[len(calls)-1]; last != "reset-failed k8slab-kubeadm-*" {
				t.Errorf("last systemctl call %q, want the failed units reset", last)
			}
		})
	}
}

// runWithStandIns runs steps of reset.sh with stand-in commands (name ->
// sh body) first on PATH and $D set to dir, and returns its output.
func runWithStandIns(t *testing.T, dir string, standIns map[string]string, env []string, steps ...string) string {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	must(t, os.MkdirAll(bin, 0o755))
	for name, body := range standIns {
		must(t, os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	}
	return runReset(t, append([]string{"D=" + dir, "PATH=" + bin + ":" + os.Getenv("PATH")}, env...), steps...)
}

// runReset runs steps of reset.sh, as sent to a node, with this machine's
// shell and env added to the environment.
func runReset(t *testing.T, env []string, steps ...string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", nodescript.Command("reset.sh", steps...))
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return string(out)
}

// resetStep is the text of one function of reset.sh.
func resetStep(t *testing.T, name string) string {
	t.Helper()
	s := nodescript.Script("reset.sh")
	i := strings.Index(s, "\n"+name+"() {\n")
	if i < 0 {
		t.Fatalf("reset.sh has no step %s", name)
	}
	s = s[i:]
	return s[:strings.Index(s, "\n}\n")]
}

// The reset phase runs its part of reset.sh on each node and judges the
// node by what the script reports: what it removed, and anything a check
// still finds (the node is not reset then, and the run says so by name).
func TestResetNodesJudgesEachNodeByItsScript_SimulatedNodes(t *testing.T) {
	clean := &hosttest.Fake{Label: "kube-node1", Rules: []hosttest.Rule{{Match: "'kubernetes'", Stdout: "lap=units\nremoved=kubelet running\nremoved=link tunl0 (ipip module)\nlap=check\n"}}}
	stuck := &hosttest.Fake{Label: "kube-node2", Rules: []hosttest.Rule{{Match: "'kubernetes'", Stdout: "lap=units\nremoved=pod sandboxes\nleft=link tunl0: modprobe: FATAL: Module ipip is in use\n"}}}
	bare := &hosttest.Fake{Label: "kube-node3"}
	var status bytes.Buffer
	r, err := run.New(run.Options{Command: "reset", Status: &status}, []host.Host{clean, stuck, bare})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &cluster.Config{Nodes: []string{"kube-node1", "kube-node2", "kube-node3"}}
	cfg.Default()
	c := &Context{Cluster: cfg, Runner: r, Hosts: map[string]host.Host{"kube-node1": clean, "kube-node2": stuck, "kube-node3": bare}}
	err = (&ResetNodes{c, ResetOptions{}, resetKubernetes}).Run(context.Background())
	if err == nil {
		t.Fatal("a node with something left passed the reset")
	}
	rep := r.Report(nil, err)
	byHost := map[string]string{}
	for _, h := range rep.Hosts {
		byHost[h.Host] = string(h.Status) + " " + h.Error
	}
	if !strings.HasPrefix(byHost["kube-node2"], "failed") || !strings.Contains(byHost["kube-node2"], "left behind: link tunl0: modprobe: FATAL: Module ipip is in use") {
		t.Errorf("kube-node2: %q", byHost["kube-node2"])
	}
	if !strings.HasPrefix(byHost["kube-node1"], "ok") || !strings.HasPrefix(byHost["kube-node3"], "ok") {
		t.Errorf("the clean nodes: %q", byHost)
	}
	for _, want := range []string{"removed: kubelet running, link tunl0 (ipip module)", "nothing to do"} {
		if !strings.Contains(status.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, status.String())
		}
	}
	if !clean.Did("set -- '-c' '" + bootstrap.CRISocket + "' 'kubernetes'") {
		t.Errorf("reset.sh's arguments: %q", clean.Steps())
	}
}
