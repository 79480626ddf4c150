package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/provision"
	"github.com/k8slab/k8slab/topology"
	"github.com/k8slab/k8slab/topology/labtest"
)

// TestE2EContainersAsPerRack is Calico's AS-per-rack mode on the container
// nodes behind the lab's BIRD fabric, whose leaves run the configuration
// `k8slab fabric config` generates: every node peers (iBGP) with its
// rack's leaf only, the leaves carry the pod blocks to the spine, and pod
// traffic crosses leaf → spine → leaf without encapsulation. Then a no-op
// re-run, a mode switch refused naming the field, and a reset after which
// the fabric has no pod route left.
func TestE2EContainersAsPerRack(t *testing.T) {
	if os.Getenv("K8SLAB_E2E_CONTAINERS") == "" {
		t.Skip("container-node tier: run with make e2e-containers (K8SLAB_E2E_CONTAINERS=1)")
	}
	pods := netip.MustParsePrefix("172.31.128.0/18")
	lab := labtest.UpContainers(t, func(l *topology.Lab) { l.CalicoPeering = pods })
	e := newE2E(t, lab)
	env := e.env
	labFile, _ := filepath.Abs("../../testdata/labs/gns3-reference.yaml")
	e.args = []string{"install", "--service-cidr", "172.31.64.0/18", "--pod-cidr", pods.String(),
		"--artifacts", os.Getenv("K8SLAB_BUNDLE"), "--kubeconfig-dir", e.kubeconfigDir, "--name", "lab", "--output", "json",
		"--calico-bgp", "as-per-rack", "--lab", labFile, "--wait-timeout", "10m"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	install := e.install(t, "as-per-rack-install", e.args)

	// verify: every check PASS, the BGP check among them.
	r := runCLI(t, lab, env, "verify", "--output", "json")
	judgeVerify(t, "as-per-rack-verify", r.code, r.stdout, r.stderr, 18, allPass)
	if !strings.Contains(r.stdout, "BGP: every node Established with its rack") {
		e.errorf(t, "verify has no BGP check:\n%s", r.stdout)
	}

	// Each leaf: two Established sessions, one per node of its rack.
	for _, rack := range lab.Spec.Racks() {
		out, err := lab.Birdc(ctx, rack.Router, "show", "protocols")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: show protocols\n%s", rack.Router, out)
		for _, n := range rack.Nodes {
			line := ""
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, strings.ReplaceAll(n.Name, "-", "_")+" ") {
					line = l
				}
			}
			if !strings.Contains(line, "Established") {
				e.errorf(t, "%s: session with %s (%s) not Established: %q", rack.Router, n.Name, n.Addr, line)
			}
		}
	}

	// A probe pod on every node: Calico gives a node its pod block with
	// its first pod (without encapsulation no tunnel address takes one).
	nodes := []string{"kube-node1", "kube-node2", "kube-node3", "kube-node4"}
	for _, n := range nodes {
		e.kubectl(fmt.Sprintf(`run hops-%s --image=%s --image-pull-policy=Never --restart=Never --overrides='{"apiVersion":"v1","spec":{"nodeName":"%s"}}' -- serve`, n, provision.ProbeImage, n))
	}
	e.kubectl(`wait --for=condition=Ready pod/hops-kube-node1 pod/hops-kube-node2 pod/hops-kube-node3 pod/hops-kube-node4 --timeout=180s`)

	// The spine routes every node's pod block through that node's leaf;
	// kube-node1 reaches its rack neighbour's block directly and the other
	// rack's through its leaf, with no tunnel device anywhere.
	blocks, affinities := podBlocks(t, e)
	leafLink := map[string]string{"kube-node1": "172.31.1.2", "kube-node2": "172.31.1.2", "kube-node3": "172.31.2.2", "kube-node4": "172.31.2.2"}
	fromNode1 := map[string]string{"kube-node2": "via 172.31.3.12 dev eth0", "kube-node3": "via 172.31.3.1 dev eth0", "kube-node4": "via 172.31.3.1 dev eth0"}
	for _, node := range nodes {
		if len(blocks[node]) == 0 {
			e.errorf(t, "no pod block affine to %s: %q", node, affinities)
		}
		for _, cidr := range blocks[node] {
			route, err := lab.Run(ctx, "spine", "ip -4 route show "+cidr)
			t.Logf("spine: route to %s's block: %s", node, strings.TrimSpace(route))
			if err != nil || !strings.Contains(route, "via "+leafLink[node]) {
				e.errorf(t, "spine: route to %s's block %s is %q (%v), want via %s", node, cidr, strings.TrimSpace(route), err, leafLink[node])
			}
			if want, ok := fromNode1[node]; ok {
				got := e.sh("172.31.3.11", "ip -4 route show "+cidr)
				t.Logf("kube-node1: route to %s's block: %s", node, got)
				if !strings.Contains(got, want) {
					e.errorf(t, "kube-node1: route to %s's block %s is %q, want %s", node, cidr, got, want)
				}
			}
		}
	}
	for _, n := range lab.Spec.NodeAddrs() {
		if dev := e.sh(n, `ip -o link | awk -F': ' '$2 ~ /^(vxlan|tunl0)/ {print $2}'`); dev != "" {
			e.errorf(t, "%s: tunnel devices in as-per-rack mode: %s", n, dev)
		}
	}

	// ICMP from kube-node1 to the pod on kube-node3 with growing TTLs: the
	// packets expire at leaf1, the spine and leaf2 in turn, and reach the
	// pod with five hops to go (kube-node3 routes it into the pod).
	podIP := e.kubectl(`get pod hops-kube-node3 -o jsonpath={.status.podIP}`)
	if !pods.Contains(netip.MustParseAddr(podIP)) {
		t.Fatalf("pod on kube-node3 has %s, outside %s", podIP, pods)
	}
	for _, p := range []struct {
		ttl  int
		want string
	}{{1, "From 172.31.3.1 "}, {2, "From 172.31.1.1 "}, {3, "From 172.31.2.2 "}, {5, "bytes from " + podIP}} {
		out, _ := lab.Run(ctx, "kube-node1", fmt.Sprintf("ping -n -c1 -W2 -t %d %s", p.ttl, podIP))
		t.Logf("kube-node1 → pod %s, TTL %d: %s", podIP, p.ttl, firstLine(out, "From ", "bytes from"))
		if !strings.Contains(out, p.want) {
			e.errorf(t, "TTL %d to the pod on kube-node3: want %q in\n%s", p.ttl, p.want, out)
		}
	}
	e.kubectl(`delete pod hops-kube-node1 hops-kube-node2 hops-kube-node3 hops-kube-node4 --wait=false`)

	// A re-run changes nothing; switching the mode is refused, naming it.
	r = runCLI(t, lab, env, e.args...)
	keepReport(t, "as-per-rack-rerun", r.stdout)
	if r.code != 0 {
		e.errorf(t, "re-run exit %d\n%s", r.code, tail(r.stderr, 20))
	}
	mesh := slices.DeleteFunc(slices.Clone(e.args), func(a string) bool { return a == "as-per-rack" || a == labFile })
	mesh = slices.DeleteFunc(mesh, func(a string) bool { return a == "--calico-bgp" || a == "--lab" })
	r = runCLI(t, lab, env, append(mesh, "--calico-encapsulation", "VXLAN")...)
	if r.code == 0 || !strings.Contains(r.stderr+r.stdout, "calico.bgp: as-per-rack → mesh") {
		e.errorf(t, "switching to the mesh without --force: exit %d, want a refusal naming calico.bgp\n%s", r.code, tail(r.stderr, 20))
	}

	r = runCLI(t, lab, env, "reset", "--yes", "--output", "json")
	keepReport(t, "as-per-rack-reset", r.stdout)
	if r.code != 0 {
		t.Fatalf("reset exit %d\n%s", r.code, tail(r.stderr, 30))
	}
	// With the nodes' BIRD gone the leaves withdraw every pod block, once
	// the graceful-restart time calico-node's BIRD announces (120 s) has
	// passed: a restarting calico-node keeps its pods routed meanwhile.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		left, _ := lab.Run(ctx, "spine", "ip -4 route show root "+pods.String())
		if strings.TrimSpace(left) == "" || time.Now().After(deadline) {
			if strings.TrimSpace(left) != "" {
				e.errorf(t, "spine: pod routes left after reset:\n%s", left)
			}
			break
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("as-per-rack cycle: install %s", install.Round(time.Second))
}

// firstLine is the first line holding one of the markers ("" if none).
func firstLine(out string, markers ...string) string {
	for _, l := range strings.Split(out, "\n") {
		for _, m := range markers {
			if strings.Contains(l, m) {
				return strings.TrimSpace(l)
			}
		}
	}
	return ""
}
