package install

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
)

// containerdStandIns puts stand-in ctr and crictl on a local host's PATH:
// ctr lists tasks (tasks, a `ctr tasks ls` table), crictl lists running
// containers (running, one ID per line) and names each as upgrade-ipam
// or kube-proxy by its ID's first letter.
func containerdStandIns(t *testing.T, tasks, running string) host.Host {
	t.Helper()
	dir := t.TempDir()
	for name, script := range map[string]string{
		"ctr": "#!/bin/sh\n[ \"$*\" = '-n k8s.io tasks ls' ] || exit 1\ncat <<'EOF'\n" + tasks + "\nEOF\n",
		"crictl": "#!/bin/sh\ncase \"$1\" in\nps) printf '%s' '" + running + "' ;;\n" +
			"inspect) for id; do :; done; case $id in a*) echo upgrade-ipam ;; *) echo kube-proxy ;; esac ;;\n*) exit 1 ;;\nesac\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &hosttest.Local{Env: []string{"PATH=" + dir + ":" + os.Getenv("PATH")}}
}

// The rollout's report names a container whose task containerd has
// stopped while the CRI still reports it running, on a node whose
// calico-node is not ready; running and stopped containers that agree,
// and ready nodes, are not named. (The real scripts/node/lost-exits.sh
// against stand-in ctr and crictl.)
func TestLostExitsNamedInRolloutReport_SimulatedContainerd(t *testing.T) {
	const tasks = "TASK                                                                PID     STATUS    \n" +
		"a1b3b1b3fe4ca76d2a9cbdecd4f70b4085ff8e0f03cebae223780cbedc2d37e2    1904    STOPPED\n" +
		"b3cada9f19162eab70b2dad37f5a9020f368cac88f904c5586272d661f3a4fe8    1901    RUNNING\n" +
		"c6e52d8999193aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa    1200    STOPPED"
	// crictl lists running containers by their full IDs; c6e52... has
	// stopped for both and is not listed.
	const running = "a1b3b1b3fe4ca76d2a9cbdecd4f70b4085ff8e0f03cebae223780cbedc2d37e2\nb3cada9f19162eab70b2dad37f5a9020f368cac88f904c5586272d661f3a4fe8\n"
	hosts := map[string]host.Host{
		"kube-node1": containerdStandIns(t, tasks, running),
		"kube-node2": containerdStandIns(t, tasks, running),
		"kube-node3": containerdStandIns(t, strings.ReplaceAll(tasks, "STOPPED", "RUNNING"), running),
	}
	st := calico.Status{Nodes: []calico.NodeReport{
		{Node: "kube-node1", Calico: "Pending: init container 1 of 3, upgrade-ipam, running for 39m10s"},
		{Node: "kube-node2", Calico: calico.CalicoReady, Ready: true},
		{Node: "kube-node3", Calico: "Pending: init container 1 of 3, upgrade-ipam, running for 2m"},
	}}
	got := lostExits(context.Background(), hosts, st)
	want := "kube-node1: containerd lost the exit of container upgrade-ipam: its task has stopped, the kubelet still sees it running (ctr -n k8s.io tasks ls; crictl ps)"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("lost exits:\n%q\nwant only\n%q", got, want)
	}
	inc := &RolloutIncomplete{Status: st, LostExits: got}
	if msg := inc.Error(); !strings.Contains(msg, "\n  "+want) {
		t.Errorf("report lacks the lost exit:\n%s", msg)
	}
}
