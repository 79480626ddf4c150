package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/ssh"
	"github.com/k8slab/k8slab/topology/labtest"
)

// TestE2EContainers is the container-node tier: the reference lab with
// its four nodes as systemd containers behind the BIRD fabric, and the
// lab engineer's cycle on it with Calico really forwarding (VXLAN: the
// workstation's kernel has no ipip module): install → verify with every
// check PASS and none skipped → the routes Calico programmed → a no-op
// re-run → reinstall → verify → reset leaves nothing. The lab's teardown
// then proves the workstation's cgroups, mounts and kernel settings are
// as they were. Last, an install with kube-proxy in iptables mode (the
// reset forgot the record) proves the bundle's kube-proxy image in that
// mode too.
func TestE2EContainers(t *testing.T) {
	if os.Getenv("K8SLAB_E2E_CONTAINERS") == "" {
		t.Skip("container-node tier: run with make e2e-containers (K8SLAB_E2E_CONTAINERS=1)")
	}
	cycle := time.Now()
	e := newE2E(t, labtest.UpContainers(t))
	lab, env, sh := e.lab, e.env, e.sh
	e.args = []string{"install", "--service-cidr", "172.31.64.0/18", "--pod-cidr", "172.31.128.0/18",
		"--artifacts", os.Getenv("K8SLAB_BUNDLE"), "--kubeconfig-dir", e.kubeconfigDir, "--name", "lab", "--output", "json",
		"--calico-encapsulation", "VXLAN", "--wait-timeout", "10m"}

	// The workstation's kernel has no ipip module: the default IPIP is
	// refused before any node is touched, naming a node and the module.
	r := runCLI(t, lab, env, "install", "--only", "preflight")
	if r.code != exitFailed || !strings.Contains(r.stderr, "needs the ipip kernel module") {
		t.Fatalf("preflight with IPIP on a kernel without ipip: exit %d\n%s", r.code, tail(r.stderr, 20))
	}

	install := e.install(t, "containers-install", e.args)
	podsWaitedForTheNetwork(t, e)

	// Each node has a product_uuid of its own (the workstation has no
	// DMI), and the kubelet reports it as the Node's systemUUID.
	reported := strings.ToLower(e.kubectl(`get nodes -o jsonpath='{range .items[*]}{.status.nodeInfo.systemUUID} {end}'`))
	seen := map[string]string{}
	for _, n := range lab.Spec.NodeAddrs() {
		u := strings.ToLower(sh(n, "cat /sys/class/dmi/id/product_uuid"))
		if u == "" || seen[u] != "" || !strings.Contains(reported, u) {
			e.errorf(t, "%s: product_uuid %q (also %q's), the kubelets report %q", n, u, seen[u], reported)
		}
		seen[u] = n
	}

	// Every check PASS, none skipped: the pod network is real here.
	judge := func(step string, code int, stdout, stderr string) {
		t.Helper()
		judgeVerify(t, "containers-verify-"+step, code, stdout, stderr, 17, allPass)
	}
	verifyAll := func(step string) {
		t.Helper()
		r := runCLI(t, lab, env, "verify", "--output", "json")
		judge(step, r.code, r.stdout, r.stderr)
	}
	verifyAll("install")
	checkPodRoutes(t, e, crossSubnet("vxlan.calico"))
	rerun := e.noOpRerun(t, "containers-rerun", e.args, install)

	// reinstall as a scripted regression cycle runs it: scripts/regression.sh
	// with the flags a user would give (the record holds the rest), its
	// reinstall's and verify's JSON reports judged as above.
	out := t.TempDir()
	script, _ := filepath.Abs("../../scripts/regression.sh")
	regress := labCmd(t, lab, append(env, "K8SLAB="+binPath, "OUT="+out), script, "1", "--nodes", "172.31.3.11", "--artifacts", os.Getenv("K8SLAB_BUNDLE"))
	regress.Dir = out // the reinstall writes the kubeconfig where it runs: never into the source tree
	so, err := regress.CombinedOutput()
	t.Logf("scripts/regression.sh 1: %v\n%s", err, tail(string(so), 20))
	var rcs [2]int
	if _, serr := fmt.Sscanf(string(so), "cycle 1: reinstall exit %d, verify exit %d", &rcs[0], &rcs[1]); serr != nil || err != nil || !strings.Contains(string(so), "1 cycles, 0 failed") {
		e.errorf(t, "regression.sh 1: %v, %v", err, serr)
	}
	readOut := func(name string) string { b, _ := os.ReadFile(filepath.Join(out, name)); return string(b) }
	keepReport(t, "containers-reinstall", readOut("cycle-1-reinstall.json"))
	var rr struct {
		DurationMS int64 `json:"duration_ms"`
	}
	json.Unmarshal([]byte(readOut("cycle-1-reinstall.json")), &rr)
	reinstall := time.Duration(rr.DurationMS) * time.Millisecond
	t.Logf("reinstall: %s (%.0f %% of the install), exit %d", reinstall.Round(time.Second), 100*reinstall.Seconds()/install.Seconds(), rcs[0])
	if rcs[0] != 0 || reinstall == 0 {
		t.Fatalf("reinstall exit %d\n%s", rcs[0], tail(readOut("cycle-1-reinstall.log"), 30))
	}
	judge("reinstall", rcs[1], readOut("cycle-1-verify.json"), readOut("cycle-1-verify.log"))
	podsWaitedForTheNetwork(t, e)
	// The control plane's static pods have the same UIDs in every cluster:
	// had reset left their logs in /var/log/pods, the kubelet would count
	// the old cluster's containers as restarts of the new one's.
	if got := e.kubectl(`-n kube-system get pods -l tier=control-plane -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[*].restartCount} {end}'`); strings.Count(got, "=0") != 3 {
		e.errorf(t, "after the reinstall, the control plane's pods count restarts: %s", got)
	}

	// A node verify cannot reach over SSH (port 22 dropped in kube-node4's
	// own network namespace, which this lab made) is failed in verify's
	// report and the run exits 1; the checks, which go through the API
	// server, still run and pass.
	unreachable(t, lab.NS("kube-node4"), func() {
		r := runCLI(t, lab, env, "verify", "--output", "json", "--connect-timeout", "5s")
		var rep verifyReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("verify with kube-node4 unreachable: exit %d: %v\n%s", r.code, err, tail(r.stderr, 20))
		}
		status := map[string]string{}
		for _, h := range rep.Hosts {
			status[h.Host] = h.Status
		}
		t.Logf("verify with kube-node4 unreachable: exit %d, verdict %s, hosts %v", r.code, rep.Data.Verdict, status)
		if r.code != exitFailed || rep.Data.Verdict != "PASS" || status["172.31.4.12"] != "failed" || status["172.31.3.11"] != "ok" {
			e.errorf(t, "verify with kube-node4 unreachable: exit %d, verdict %s, hosts %v, want exit %d, PASS, kube-node4 failed", r.code, rep.Data.Verdict, status, exitFailed)
		}
	})

	start := time.Now()
	r = runCLI(t, lab, env, "reset", "--yes", "--output", "json")
	keepReport(t, "containers-reset", r.stdout)
	t.Logf("reset: %s, exit %d", time.Since(start).Round(time.Second), r.code)
	if r.code != 0 {
		t.Fatalf("reset exit %d\n%s", r.code, tail(r.stderr, 30))
	}
	e.nothingLeft(t)
	cycleTime := time.Since(cycle)
	t.Logf("whole cycle on container nodes: %s (install %s, re-run %s, reinstall %s)",
		cycleTime.Round(time.Second), install.Round(time.Second), rerun.Round(time.Second), reinstall.Round(time.Second))

	// kube-proxy's iptables mode (what kernels before 5.13 get): the
	// bundle's image has iptables behind the wrapper that picks the
	// node's variant; Services must work and kube-proxy's rules must be
	// where the node's own iptables sees them. The reset above forgot
	// the record, so other settings install without --force. The cluster
	// comes from the blog's kubespray inventory, as it is (roles, service
	// and pod networks), with flags for what this kernel needs.
	start = time.Now()
	inventory, _ := filepath.Abs("../../testdata/kubespray/seed/inventory.cfg")
	r = runCLI(t, lab, env, "install", "-i", inventory, "--artifacts", os.Getenv("K8SLAB_BUNDLE"), "--kubeconfig-dir", e.kubeconfigDir,
		"--name", "lab", "--output", "json", "--calico-encapsulation", "VXLAN", "--wait-timeout", "10m", "--kube-proxy-mode", "iptables")
	keepReport(t, "containers-install-iptables", r.stdout)
	t.Logf("install from the kubespray inventory with kube-proxy in iptables mode: %s, exit %d\n%s", time.Since(start).Round(time.Second), r.code, tail(r.stderr, 12))
	if !strings.Contains(r.stderr, "kubespray inventory: 2 settings ignored") {
		e.errorf(t, "the inventory's ignored settings were not listed:\n%s", tail(r.stderr, 40))
	}
	if r.code != 0 {
		t.Fatalf("install (iptables mode) exit %d\n%s", r.code, tail(r.stderr, 30))
	}
	if mode := e.kubectl(`-n kube-system get cm kube-proxy -o jsonpath='{.data.config\.conf}' | sed -n 's/^mode: //p'`); mode != "iptables" {
		e.errorf(t, "kube-proxy's mode %q, want iptables", mode)
	}
	verifyAll("iptables-mode")
	podsWaitedForTheNetwork(t, e)
	for _, n := range lab.Spec.NodeAddrs() {
		if got := sh(n, "iptables-save -t nat | grep -c '^-A KUBE-SERVICES' || true"); got == "0" || got == "" {
			e.errorf(t, "%s: the node's iptables sees no KUBE-SERVICES rules (kube-proxy wrote them elsewhere?)", n)
		}
	}
	if r := runCLI(t, lab, env, "reset", "--yes"); r.code != 0 {
		t.Fatalf("reset after the iptables-mode install: exit %d\n%s", r.code, tail(r.stderr, 20))
	}
}

// nothingLeft checks, after a reset, that no node has a pod sandbox, Calico's links,
// a Kubernetes process, their state or k8slab's record left.
func (e *e2e) nothingLeft(t *testing.T) {
	t.Helper()
	for _, n := range e.lab.Spec.NodeAddrs() {
		left := e.sh(n, `ip -o link | awk -F': ' '$2 ~ /^(cali|vxlan|tunl0)/ {print $2}'; pgrep -x 'kubelet|etcd|kube-apiserver|calico-node' || true; find /etc/kubernetes /var/lib/kubelet /var/lib/etcd /etc/cni/net.d -mindepth 1 2>/dev/null | head -n 5; ls /etc/k8slab/cluster.yaml 2>/dev/null || true; crictl pods -q 2>/dev/null | sed 's/^/pod sandbox /'`)
		if left != "" {
			e.errorf(t, "%s: left after reset:\n%s", n, left)
		}
	}
}

// crossSubnet is the routes to other nodes' pod blocks Calico programs
// on kube-node1 of the reference lab in CrossSubnet mode: the same-rack
// node's straight over eth0, each other-rack node's through the tunnel
// device (tunl0 for IPIP, vxlan.calico for VXLAN).
func crossSubnet(tunnel string) map[string]string {
	return map[string]string{"kube-node2": "dev eth0", "kube-node3": "dev " + tunnel, "kube-node4": "dev " + tunnel}
}

// checkPodRoutes reads the routes Calico programmed on kube-node1 to
// each node named in want, whose route to that node's pod blocks must
// contain want's text.
func checkPodRoutes(t *testing.T, e *e2e, want map[string]string) {
	t.Helper()
	blocks, out := podBlocks(t, e)
	for _, node := range slices.Sorted(maps.Keys(want)) {
		if len(blocks[node]) == 0 {
			e.errorf(t, "no pod block affine to %s: %q", node, out)
			continue
		}
		for _, cidr := range blocks[node] {
			route := e.sh("172.31.3.11", "ip route show "+cidr)
			t.Logf("kube-node1: route to %s's block: %s", node, route)
			if !strings.Contains(route, want[node]) {
				e.errorf(t, "kube-node1: route to %s's block %s is %q, want %s", node, cidr, route, want[node])
			}
		}
	}
}

// noOpRerun runs the install again with args and checks it changed
// nothing: no pod or service restarted, not slow enough to have redone
// work. It returns how long it took.
func (e *e2e) noOpRerun(t *testing.T, name string, args []string, install time.Duration) time.Duration {
	t.Helper()
	restarts := func() string {
		return e.kubectl(`-n kube-system get pods -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[*].restartCount} {end}'`)
	}
	// Services started at: a no-op re-run restarts none of them.
	started := func() string {
		var b strings.Builder
		for _, n := range e.lab.Spec.NodeAddrs() {
			b.WriteString(n + ": " + e.sh(n, "systemctl show -p ActiveEnterTimestampMonotonic --value containerd kubelet | tr '\n' ' '") + "\n")
		}
		return b.String()
	}
	before, servicesBefore := restarts(), started()
	start := time.Now()
	r := runCLI(t, e.lab, e.env, args...)
	rerun := time.Since(start)
	keepReport(t, name, r.stdout)
	t.Logf("no-op re-run: %s (%.0f %% of the install), exit %d", rerun.Round(time.Second), 100*rerun.Seconds()/install.Seconds(), r.code)
	if r.code != 0 {
		t.Fatalf("re-run exit %d\n%s", r.code, tail(r.stderr, 30))
	}
	if after := restarts(); after != before {
		e.errorf(t, "the no-op re-run restarted pods:\nbefore %s\nafter  %s", before, after)
	}
	if after := started(); after != servicesBefore {
		e.errorf(t, "the no-op re-run restarted containerd or the kubelet:\nbefore\n%safter\n%s", servicesBefore, after)
	}
	// The target is 10 % of the install, a speed figure reported here and
	// in docs/lab-results.md: on this shared 2-core machine the same
	// re-run measured 9 % (22 s) and 15 % (48 s, every phase's checks
	// slower under the running cluster's load), so a tight bound only
	// measured the load. What makes a re-run slow for real — a restart or
	// an upload — is caught by the checks above; this bound catches a
	// re-run that redoes work (re-importing images takes minutes).
	if rerun > install*30/100 {
		e.errorf(t, "the no-op re-run took %s, more than 30 %% of the install (%s): it redid work", rerun.Round(time.Second), install.Round(time.Second))
	}
	return rerun
}

// podBlocks are the pod blocks Calico's IPAM gave each node, by node name
// (and the affinities as read, for messages).
func podBlocks(t *testing.T, e *e2e) (map[string][]string, string) {
	t.Helper()
	blocks := map[string][]string{}
	out := e.kubectl(`get blockaffinities.crd.projectcalico.org -o jsonpath='{range .items[*]}{.spec.node}={.spec.cidr} {end}'`)
	for _, f := range strings.Fields(out) {
		if node, cidr, ok := strings.Cut(f, "="); ok {
			blocks[node] = append(blocks[node], cidr)
		}
	}
	return blocks, out
}

// podsWaitedForTheNetwork: the pods that need the pod network (CoreDNS,
// calico-kube-controllers) were kept off each node until calico-node
// there had its network up, so none of their sandboxes failed for want
// of it ("stat /var/lib/calico/nodename", then the kubelet's 10-15 s
// back-off), and the rollout lifted the install's taint from every node.
func podsWaitedForTheNetwork(t *testing.T, e *e2e) {
	t.Helper()
	if ev := e.kubectl(`-n kube-system get events --field-selector reason=FailedCreatePodSandBox -o jsonpath='{range .items[*]}{.involvedObject.name}: {.message}{"\n"}{end}'`); strings.TrimSpace(ev) != "" {
		e.errorf(t, "pod sandboxes failed during the install:\n%s", ev)
	}
	if taints := e.kubectl(`get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.spec.taints[*].key} {end}'`); strings.Contains(taints, "k8slab.dev/pod-network-unavailable") {
		e.errorf(t, "the pod-network taint left after the install: %s", taints)
	}
}

// install runs an install the test needs to succeed: its JSON report
// kept as name, its time and phases logged.
func (e *e2e) install(t *testing.T, name string, args []string) time.Duration {
	t.Helper()
	start := time.Now()
	r := runCLI(t, e.lab, e.env, args...)
	took := time.Since(start)
	keepReport(t, name, r.stdout)
	t.Logf("%s: %s, exit %d\n%s", name, took.Round(time.Second), r.code, tail(r.stderr, 30))
	if r.code != 0 {
		t.Fatalf("%s: exit %d\n%s\n%s", name, r.code, r.stdout, e.podDiag())
	}
	t.Logf("phases: %s", phaseSummary(parseReport(t, r.stdout)))
	return took
}

// podDiag says what kube-system's pods were doing when an install that
// waits for them failed: their state and the last words of calico-node's
// previous containers, as the API server tells it, and each node's
// Calico containers as its containerd tells it (a saturated API server
// answered nothing for 20 minutes on the emulated VMs).
func (e *e2e) podDiag() string {
	var b strings.Builder
	for _, n := range e.lab.Spec.NodeAddrs() {
		c, err := e.pool.Host(ssh.Target{Host: n})
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", n, err)
			continue
		}
		// A task containerd has stopped while crictl still lists its
		// container Running is an exit containerd lost (seen once on a
		// saturated emulated node).
		script := `crictl ps -a --name 'calico|install-cni|upgrade-ipam' 2>&1 | head -n 12
echo "== containerd tasks not running:"; ctr -n k8s.io tasks ls 2>&1 | grep -v ' RUNNING' | head -n 8
for c in $(crictl ps -a -q --name 'calico-node|install-cni' 2>/dev/null | head -n 2); do echo "== $c"; crictl logs --tail 5 "$c" 2>&1 | cut -c1-300; done`
		if n == "172.31.3.11" {
			script = `k='kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=60s'
$k get nodes -o wide; $k -n kube-system get pods -o wide
for p in $($k -n kube-system get pods -l k8s-app=calico-node -o name); do
	echo "== $p"; $k -n kube-system logs "$p" -c calico-node --previous --tail 15 2>&1 || true
	$k -n kube-system get "$p" -o jsonpath='{range .status.containerStatuses[*]}{.name} ready={.ready} restarts={.restartCount}{"\n"}{end}'
done
` + script
		}
		out, err := host.Output(e.ctx, c, script)
		fmt.Fprintf(&b, "--- %s (%v):\n%s\n", n, err, out)
	}
	return b.String()
}

// allPass is the container tier's verdict on verify: every check PASS,
// none skipped (the pod network is real here).
var allPass = allPassBut("")

// unreachable runs fn while the network namespace ns drops every packet
// to port 22 (a table of its own, removed afterwards, also on failure).
func unreachable(t *testing.T, ns string, fn func()) {
	t.Helper()
	nft := func(rule string) error {
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", rule).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft %s: %v: %s", rule, err, out)
		}
		return nil
	}
	for _, rule := range []string{
		"add table inet k8slab-e2e",
		"add chain inet k8slab-e2e in { type filter hook input priority -200; }",
		"add rule inet k8slab-e2e in tcp dport 22 drop",
	} {
		if err := nft(rule); err != nil {
			nft("delete table inet k8slab-e2e")
			t.Fatal(err)
		}
	}
	defer func() {
		if err := nft("delete table inet k8slab-e2e"); err != nil {
			t.Error(err)
		}
	}()
	fn()
}
