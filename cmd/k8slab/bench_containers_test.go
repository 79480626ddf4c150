package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/topology"
	"github.com/k8slab/k8slab/topology/labtest"
)

// BenchmarkInstallContainers measures how an install's cost grows with
// the cluster: on the three-rack lab's container nodes
// (testdata/labs/three-racks-12.yaml), installs on 4, 8 and 12 nodes one
// after the other (reset in between), each with Calico VXLAN and --wait.
// It reports the install's wall time, the workstation's CPU time per node
// (every process in the node containers' cgroups, plus k8slab itself) and
// each node's resident memory after the install. Run it with
// make bench-containers (one iteration each: an install is minutes).
func BenchmarkInstallContainers(b *testing.B) {
	if os.Getenv("K8SLAB_BENCH_CONTAINERS") == "" {
		b.Skip("container-node benchmark: run with make bench-containers (K8SLAB_BENCH_CONTAINERS=1)")
	}
	labFile, err := os.ReadFile("../../testdata/labs/three-racks-12.yaml")
	if err != nil {
		b.Fatal(err)
	}
	lab := labtest.UpContainersFile(b, labFile)
	env, _ := labEnv(b, lab)
	sets := map[int][]string{
		4:  {"kube-node1", "kube-node2", "kube-node5", "kube-node6"},
		8:  {"kube-node1", "kube-node2", "kube-node3", "kube-node4", "kube-node5", "kube-node6", "kube-node7", "kube-node8"},
		12: nil, // all
	}
	for _, n := range []int{4, 8, 12} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			names := sets[n]
			if names == nil {
				for _, nd := range lab.Spec.Nodes {
					names = append(names, nd.Name)
				}
			}
			var addrs []string
			for _, name := range names {
				addrs = append(addrs, nodeAddr(lab, name))
			}
			for i := 0; i < b.N; i++ {
				before := usage(b, lab, names)
				args := []string{"install", "--nodes", strings.Join(addrs, ","), "--service-cidr", "172.31.64.0/18", "--pod-cidr", "172.31.128.0/18",
					"--artifacts", os.Getenv("K8SLAB_BUNDLE"), "--kubeconfig-dir", b.TempDir(), "--name", "bench", "--output", "json",
					"--calico-encapsulation", "VXLAN", "--wait-timeout", "25m"}
				start := time.Now()
				cmd := cliCmd(b, lab, env, args...)
				out, err := cmd.Output()
				took := time.Since(start)
				if err != nil {
					b.Fatalf("install on %d nodes: %v\n%s", n, err, tail(string(out), 30))
				}
				self := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
				after := usage(b, lab, names)
				keepReport(b, fmt.Sprintf("bench-install-%d", n), string(out))
				var rss int64
				for _, name := range names {
					rss += after[name].RSSBytes
				}
				cpu := self
				for _, name := range names {
					cpu += after[name].CPU - before[name].CPU
				}
				b.ReportMetric(took.Seconds(), "s/install")
				b.ReportMetric(cpu.Seconds()/float64(n), "cpu-s/node")
				b.ReportMetric(float64(rss)/float64(n)/(1<<20), "MiB-rss/node")
				b.Logf("%d nodes: install %s, workstation CPU %s (k8slab %s), %.0f MiB resident per node",
					n, took.Round(time.Second), cpu.Round(time.Second), self.Round(100*time.Millisecond), float64(rss)/float64(n)/(1<<20))
				r := runCLI(b, lab, env, "reset", "--yes", "--nodes", strings.Join(addrs, ","))
				if r.code != 0 {
					b.Fatalf("reset after %d nodes: exit %d\n%s", n, r.code, tail(r.stderr, 20))
				}
			}
		})
	}
}

func nodeAddr(lab *topology.Lab, name string) string {
	for _, n := range lab.Spec.Nodes {
		if n.Name == name {
			a, _, _ := strings.Cut(n.Address, "/")
			return a
		}
	}
	return name
}

func usage(b *testing.B, lab *topology.Lab, names []string) map[string]topology.NodeUsage {
	out := map[string]topology.NodeUsage{}
	for _, n := range names {
		u, err := lab.Usage(n)
		if err != nil {
			b.Fatal(err)
		}
		out[n] = u
	}
	return out
}
