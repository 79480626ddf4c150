package topology_test

import (
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/k8slab/k8slab"
	"github.com/k8slab/k8slab/topology"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func referenceSpec(t *testing.T) *topology.Spec {
	t.Helper()
	s, err := topology.Parse(k8slab.ReferenceLab)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var referencePods = netip.MustParsePrefix("172.31.128.0/18")

func TestRacksOfTheReferenceLab(t *testing.T) {
	racks := referenceSpec(t).Racks()
	var got []string
	for _, r := range racks {
		var nodes []string
		for _, n := range r.Nodes {
			nodes = append(nodes, n.Name+"@"+n.Addr.String())
		}
		got = append(got, r.Router+" AS"+itoa(r.ASN)+" "+r.Local.String()+" "+r.Subnet.String()+": "+strings.Join(nodes, ","))
	}
	want := []string{
		"leaf1 AS65001 172.31.3.1 172.31.3.0/24: kube-node1@172.31.3.11,kube-node2@172.31.3.12",
		"leaf2 AS65002 172.31.4.1 172.31.4.0/24: kube-node3@172.31.4.11,kube-node4@172.31.4.12",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("racks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

// TestFabricConfigGolden pins the generated configuration of the
// reference lab's leaves in both dialects (go test -update rewrites).
func TestFabricConfigGolden(t *testing.T) {
	for _, r := range referenceSpec(t).Racks() {
		for _, d := range []string{topology.Bird1, topology.Bird2} {
			got, err := topology.FabricConfig(r, d, referencePods)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("..", "testdata", "fabric", "gns3-reference", r.Router+"."+d+".conf")
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("%s: differs from %s (go test ./topology -run Golden -update):\n%s", r.Router, golden, got)
			}
		}
	}
}

func TestFabricConfigRefuses(t *testing.T) {
	r := referenceSpec(t).Racks()[0]
	for _, tt := range []struct {
		dialect string
		pods    netip.Prefix
		want    string
	}{
		{"bird3", referencePods, `dialect "bird3"`},
		{topology.Bird2, netip.MustParsePrefix("172.31.128.1/18"), "not an IPv4 network address"},
		{topology.Bird2, netip.Prefix{}, "not an IPv4 network address"},
	} {
		if _, err := topology.FabricConfig(r, tt.dialect, tt.pods); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s %s: err %v, want %q", tt.dialect, tt.pods, err, tt.want)
		}
	}
}

// birdParse has a real BIRD daemon parse a configuration (bird -p).
func birdParse(t *testing.T, bird, conf string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "bird.conf")
	if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bird, "-p", "-c", f).CombinedOutput(); err != nil {
		t.Errorf("%s -p rejects the configuration: %v\n%s\n--- configuration:\n%s", bird, err, out, numbered(conf))
	}
}

func numbered(s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strconv.Itoa(i+1) + "\t" + lines[i]
	}
	return strings.Join(lines, "\n")
}

// birdBinary finds a BIRD daemon of one major version: BIRD 2 is the
// lab's (Debian's bird2), BIRD 1.6 is unpacked beside it by
// scripts/install-test-deps.sh (the two packages conflict).
func birdBinary(t *testing.T, major string) string {
	t.Helper()
	candidates := []string{"bird"}
	if major == "1" {
		home, _ := os.UserHomeDir()
		candidates = []string{os.Getenv("K8SLAB_BIRD1"), filepath.Join(home, ".cache", "k8slab", "bird1", "usr", "sbin", "bird")}
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		path, err := exec.LookPath(c)
		if err != nil {
			continue
		}
		out, _ := exec.Command(path, "--version").CombinedOutput()
		if strings.Contains(string(out), "BIRD version "+major+".") {
			return path
		}
	}
	msg := "no BIRD " + major + " daemon (scripts/install-test-deps.sh installs BIRD 2 and unpacks BIRD 1.6)"
	if os.Getenv("K8SLAB_REQUIRE_LAB") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestFabricConfigParsesWithBIRD: the seed's leaf configuration (the
// router image's bird.conf and the blog's session to the spine, BIRD 1.6)
// with the generated rack peering is a complete configuration BIRD 1.6
// accepts; the BIRD 2 dialect, with the lab's own BIRD 2 leaf
// configuration, one BIRD 2 accepts.
func TestFabricConfigParsesWithBIRD(t *testing.T) {
	spec := referenceSpec(t)
	seed, err := os.ReadFile("../testdata/fabric/seed/bird.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range spec.Racks() {
		peer, err := os.ReadFile("../testdata/fabric/seed/" + r.Router + "-eth0-peer.conf")
		if err != nil {
			t.Fatal(err)
		}
		var lab string
		for _, router := range spec.Routers {
			if router.Name == r.Router {
				if lab, err = topology.BirdConfig(router); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, d := range []struct{ dialect, major, base string }{
			{topology.Bird1, "1", strings.ReplaceAll(string(seed), "ROUTER_ID", r.Local.String()) + "\n" + string(peer)},
			{topology.Bird2, "2", lab},
		} {
			t.Run(r.Router+"/"+d.dialect, func(t *testing.T) {
				bird := birdBinary(t, d.major)
				gen, err := topology.FabricConfig(r, d.dialect, referencePods)
				if err != nil {
					t.Fatal(err)
				}
				birdParse(t, bird, d.base+"\n"+gen)
			})
		}
	}
}
