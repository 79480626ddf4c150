package install

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/host"
	nodescript "github.com/k8slab/k8slab/scripts/node"
)

// lostExits asks each node whose calico-node is not ready whether
// containerd has lost the exit of a container the kubelet still sees
// running (scripts/node/lost-exits.sh), for the report of a rollout that
// did not finish: such a container never ends for the kubelet, and an
// init container that never ends holds calico-node back for good. Seen on
// the saturated emulated control plane, where containerd v2.4.2 got
// upgrade-ipam's exit before its start (2m54s) had returned and timed out
// on every attempt to handle it. The nodes are asked at once, each given
// 30 s; one that does not answer is left out.
func lostExits(ctx context.Context, hosts map[string]host.Host, st calico.Status) []string {
	found := make([][]string, len(st.Nodes))
	var wg sync.WaitGroup
	for i, n := range st.Nodes {
		h, ok := hosts[n.Node]
		if !ok || n.Calico == calico.CalicoReady {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			res, err := host.Output(cctx, h, nodescript.Script("lost-exits.sh"))
			if err != nil {
				return
			}
			for _, name := range slices.Sorted(slices.Values(nodescript.Parse(res)["lost"])) {
				found[i] = append(found[i], fmt.Sprintf("%s: containerd lost the exit of container %s: its task has stopped, the kubelet still sees it running (ctr -n k8s.io tasks ls; crictl ps)", n.Node, name))
			}
		})
	}
	wg.Wait()
	return slices.Concat(found...)
}
