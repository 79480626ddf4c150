package provision

import (
	"fmt"
	"sort"
	"strings"
)

// Release pins every component installed with one Kubernetes version.
// The table is the single place versions live: the bundle builder, the
// installer and the docs read it from here.
type Release struct {
	Kubernetes string
	// Etcd is the etcd release; EtcdImageTag is the tag kubeadm expects
	// for the stacked etcd image of this Kubernetes version.
	Etcd         string
	EtcdImageTag string
	Containerd   string
	Runc         string
	CNIPlugins   string
	Crictl       string
	CoreDNS      string
	Pause        string
	// Calico lists the Calico versions tested with this release.
	Calico []string
}

// releases is the pinned table; see LookupRelease.
func releases() map[string]Release {
	return map[string]Release{
		"v1.37.2": {
			Kubernetes:   "v1.37.2",
			Etcd:         "v3.7.0",
			EtcdImageTag: "3.7.0-0",
			Containerd:   "v2.4.2",
			Runc:         "v1.5.2",
			CNIPlugins:   "v1.9.1",
			Crictl:       "v1.37.0",
			CoreDNS:      "v1.14.6",
			Pause:        "3.10.2",
			Calico:       []string{"v3.32.1"},
		},
	}
}

// DefaultKubernetesVersion is what install uses without --kubernetes-version.
const DefaultKubernetesVersion = "v1.37.2"

// LookupRelease returns the pins for a Kubernetes version, or an error that
// lists the supported ones.
func LookupRelease(k8s string) (Release, error) {
	if !strings.HasPrefix(k8s, "v") {
		k8s = "v" + k8s
	}
	r, ok := releases()[k8s]
	if !ok {
		var known []string
		for v := range releases() {
			known = append(known, v)
		}
		sort.Strings(known)
		return Release{}, fmt.Errorf("kubernetes version %s is not supported (supported: %s)", k8s, strings.Join(known, ", "))
	}
	return r, nil
}

// ProbeImage is the test image `k8slab verify` runs its pod checks with
// (cmd/k8slab-probe). It exists only in bundles built by k8slab-bundle:
// nodes import it when the bundle has it, and verify's pod checks say SKIP
// when a node lacks it. Bump the tag when the probe changes: a node that
// has the tag is not given the image again.
const ProbeImage = "k8slab.dev/k8slab-probe:v1"

// Images are the container images kubeadm pulls for this release (what
// `kubeadm config images list` prints), by reference.
// CalicoImages are the images Calico's manifest (calico.yaml) runs:
// calico-node and its CNI installer on every node, kube-controllers on one.
func CalicoImages(version string) []string {
	return []string{"quay.io/calico/node:" + version, "quay.io/calico/cni:" + version, "quay.io/calico/kube-controllers:" + version}
}

func (r Release) Images() []string {
	return []string{
		"registry.k8s.io/kube-apiserver:" + r.Kubernetes,
		"registry.k8s.io/kube-controller-manager:" + r.Kubernetes,
		"registry.k8s.io/kube-scheduler:" + r.Kubernetes,
		"registry.k8s.io/kube-proxy:" + r.Kubernetes,
		"registry.k8s.io/coredns/coredns:" + r.CoreDNS,
		"registry.k8s.io/pause:" + r.Pause,
		"registry.k8s.io/etcd:" + r.EtcdImageTag,
	}
}
