package install

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/k8slab/k8slab/internal/kube"
	"github.com/k8slab/k8slab/internal/phase"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// DNS fits kubeadm's CoreDNS to the lab. Its Corefile forwards every
// name outside the cluster to the node's /etc/resolv.conf; on a node with
// no nameserver (an isolated lab network) CoreDNS then exits at start
// ("plugin/forward: no valid upstream addresses found") and never becomes
// ready. Where some node has none, CoreDNS answers the cluster's names
// only, and says so; elsewhere kubeadm's Corefile stays as it is. And its
// Deployment gets a start-up probe (see startupProbe).
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
	return []phase.Step{{Action: action + "; CoreDNS gets a start-up probe on its readiness endpoint (every second), so it is marked Ready when it is"}}
}

// forwardBlock is the Corefile's forward plugin, with or without a block.
var forwardBlock = regexp.MustCompile(`(?m)^[ \t]*forward[ \t]+\.[^\n{]*(\{[^}]*\})?[ \t]*\n`)

// WithoutForward is a Corefile that answers cluster names only.
func WithoutForward(corefile string) string { return forwardBlock.ReplaceAllString(corefile, "") }

func (d *DNS) Run(ctx context.Context) error {
	cl, err := d.kubeClient(d.Access)
	if err != nil {
		return err
	}
	if err := d.corefile(ctx, cl); err != nil {
		return err
	}
	return d.startupProbe(ctx, cl)
}

// startupProbe gives CoreDNS's container a start-up probe that GETs its
// readiness endpoint every second, for up to 30 minutes. kubeadm's
// readiness probe runs every 10 s, and its first run can come before
// CoreDNS has read the cluster's Services: on a container node CoreDNS was
// marked Ready up to 11 s after it started (2 s and 11 s in two
// reinstalls), the last thing the install waited for. When a start-up
// probe passes, the kubelet runs the readiness probe at once; after that
// kubeadm's probes apply as they are.
func (d *DNS) startupProbe(ctx context.Context, cl *kube.Client) error {
	status := d.Runner.StatusWriter()
	deps := cl.Kube.AppsV1().Deployments(metav1.NamespaceSystem)
	dep, err := deps.Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("CoreDNS's Deployment: %w", err)
	}
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name != "coredns" {
			continue
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
			return fmt.Errorf("CoreDNS's Deployment: container coredns has no HTTP readiness probe to start from")
		}
		want := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: c.ReadinessProbe.HTTPGet.DeepCopy()},
			PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1800}
		if equality.Semantic.DeepEqual(c.StartupProbe, want) {
			fmt.Fprintln(status, "dns: CoreDNS has its start-up probe")
			return nil
		}
		patch, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"containers": []any{map[string]any{"name": "coredns", "startupProbe": want}}}}}})
		if err != nil {
			return err
		}
		if _, err := deps.Patch(ctx, "coredns", types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: kube.FieldManager}); err != nil {
			return fmt.Errorf("CoreDNS's Deployment: %w", err)
		}
		fmt.Fprintln(status, "dns: CoreDNS's readiness asked every second until it first passes (a start-up probe)")
		return nil
	}
	return fmt.Errorf("CoreDNS's Deployment has no container coredns")
}

// corefile drops the forward plugin where some node has no nameserver.
func (d *DNS) corefile(ctx context.Context, cl *kube.Client) error {
	status := d.Runner.StatusWriter()
	none := d.withoutUpstream()
	if len(none) == 0 {
		fmt.Fprintln(status, "dns: every node has a nameserver: kubeadm's Corefile stays")
		return nil
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
