package install

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/k8slab/k8slab/internal/phase"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DNS fits CoreDNS to the nodes' resolvers. kubeadm's Corefile forwards
// every name outside the cluster to the node's /etc/resolv.conf; on a
// node with no nameserver (an isolated lab network) CoreDNS then exits at
// start ("plugin/forward: no valid upstream addresses found") and never
// becomes ready. Where some node has none, CoreDNS answers the cluster's
// names only, and says so; elsewhere kubeadm's Corefile stays as it is.
type DNS struct {
	*Context
	Access *Access // from the control-plane phase
}

func (*DNS) Name() string { return "dns" }

// withoutUpstream lists the nodes with no nameserver (none before preflight).
func (d *DNS) withoutUpstream() []string {
	var out []string
	for _, n := range d.Cluster.Nodes {
		if f := d.Node(n).Facts; f.Kernel != "" && f.Nameservers == 0 {
			out = append(out, n)
		}
	}
	return out
}

func (d *DNS) Plan() []phase.Step {
	action := "CoreDNS forwards other names to the nodes' resolvers (kubeadm's Corefile), unless a node has no nameserver: then it answers cluster names only"
	if none := d.withoutUpstream(); len(none) > 0 {
		action = "no nameserver on " + strings.Join(none, ",") + ": CoreDNS answers cluster names only (forward removed from the Corefile)"
	}
	return []phase.Step{{Action: action}}
}

// forwardBlock is the Corefile's forward plugin, with or without a block.
var forwardBlock = regexp.MustCompile(`(?m)^[ \t]*forward[ \t]+\.[^\n{]*(\{[^}]*\})?[ \t]*\n`)

// WithoutForward is a Corefile that answers cluster names only.
func WithoutForward(corefile string) string { return forwardBlock.ReplaceAllString(corefile, "") }

func (d *DNS) Run(ctx context.Context) error {
	status := d.Runner.StatusWriter()
	none := d.withoutUpstream()
	if len(none) == 0 {
		fmt.Fprintln(status, "dns: every node has a nameserver: kubeadm's Corefile stays")
		return nil
	}
	cl, err := d.kubeClient(d.Access)
	if err != nil {
		return err
	}
	cms := cl.Kube.CoreV1().ConfigMaps("kube-system")
	cm, err := cms.Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("CoreDNS's ConfigMap: %w", err)
	}
	old := cm.Data["Corefile"]
	fixed := WithoutForward(old)
	if fixed == old {
		fmt.Fprintln(status, "dns: nothing to do (CoreDNS answers cluster names only)")
		return nil
	}
	cm.Data["Corefile"] = fixed
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("CoreDNS's ConfigMap: %w", err)
	}
	fmt.Fprintf(status, "dns: no nameserver on %s: CoreDNS answers cluster names only (forward removed)\n", strings.Join(none, ", "))
	return nil
}
