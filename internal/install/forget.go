package install

import (
	"context"
	"fmt"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/phase"
	"github.com/k8slab/k8slab/internal/run"
)

// ForgetRecord removes the cluster's record from the control plane once
// every node has been reset: the settings it holds describe a cluster
// that is gone, and kept, they refused the next install with other nodes
// or CIDRs ("installed with other settings"). It is the last reset phase,
// so a reset that failed on some node keeps the record, and a second
// reset given only the control plane still finds every node.
type ForgetRecord struct{ *Context }

func (*ForgetRecord) Name() string { return "forget" }

func (f *ForgetRecord) Plan() []phase.Step {
	return []phase.Step{{Node: f.Cluster.ControlPlane, Action: "remove the cluster record " + cluster.RecordPath + " (the cluster is gone)"}}
}

func (f *ForgetRecord) Run(ctx context.Context) error {
	return f.each(ctx, "forget", []string{f.Cluster.ControlPlane}, nil, func(ctx context.Context, _ Node, t *run.Task) error {
		if _, err := host.Output(ctx, t.Host, "rm -f "+host.Quote(cluster.RecordPath)); err != nil {
			return fmt.Errorf("removing the cluster record: %w", err)
		}
		return nil
	})
}
