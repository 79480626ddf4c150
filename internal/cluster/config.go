// Package cluster is k8slab's cluster description (k8slab.dev/v1alpha1,
// kind Cluster): the nodes and their roles, versions, networks and Calico
// settings. It is read from -f k8slab.yaml, overridden by flags, defaulted
// and validated here, before any node is contacted.
package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/k8slab/k8slab/internal/ssh"
	"github.com/k8slab/k8slab/provision"
	"sigs.k8s.io/yaml"
)

// APIVersion and Kind identify a cluster file.
const (
	APIVersion = "k8slab.dev/v1alpha1"
	Kind       = "Cluster"
)

// Config is the user's cluster description.
type Config struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Name names the kubeconfig (<name>.kubeconfig) and the cluster in it.
	Name  string   `json:"name,omitempty"`
	Nodes []string `json:"nodes"`
	// ControlPlane defaults to the first node.
	ControlPlane string `json:"controlPlane,omitempty"`
	// Etcd defaults to the first three nodes when there are three or more,
	// else to the control plane alone (stacked etcd).
	Etcd []string `json:"etcd,omitempty"`
	// Workers defaults to every node, the control plane included (its
	// NoSchedule taint is then removed), as in the user's kubespray inventory.
	Workers           []string `json:"workers,omitempty"`
	KubernetesVersion string   `json:"kubernetesVersion,omitempty"`
	ServiceCIDR       string   `json:"serviceCIDR,omitempty"`
	PodCIDR           string   `json:"podCIDR,omitempty"`
	Calico            Calico   `json:"calico,omitempty"`
	// KubeProxyMode is iptables or nftables; empty picks by the control
	// plane's kernel (nftables from 5.13, which kube-proxy needs for it).
	KubeProxyMode string `json:"kubeProxyMode,omitempty"`
	// Artifacts is an offline bundle directory (k8slab-bundle).
	Artifacts string `json:"artifacts,omitempty"`
}

// Calico configures the CNI.
type Calico struct {
	Version string `json:"version,omitempty"`
	// Encapsulation is IPIP, VXLAN or None. The default IPIP runs in
	// CrossSubnet mode: the lab's racks are separate L3 subnets behind
	// routers that do not know pod routes.
	Encapsulation string `json:"encapsulation,omitempty"`
	// Autodetect is Calico's IP_AUTODETECTION_METHOD; the default makes
	// Calico use the address the kubelet reports.
	Autodetect string `json:"autodetect,omitempty"`
	// BlockSize is the IPAM block prefix length per node (default 26).
	BlockSize int `json:"blockSize,omitempty"`
	// BGP is how Calico's routes are exchanged: "mesh" (the default: every
	// node peers with every other, pods cross racks encapsulated) or
	// "as-per-rack" (Calico's L3 interconnect fabric model: each rack's
	// router and its nodes form one AS, the router reflects routes, and
	// the fabric routes pods natively, without encapsulation).
	BGP string `json:"bgp,omitempty"`
	// Racks are the routers the nodes peer with in as-per-rack mode; a
	// node belongs to the rack whose router is on its own subnet.
	Racks []Rack `json:"racks,omitempty"`
}

// Rack is one top-of-rack router and the AS it shares with its nodes.
type Rack struct {
	// Name becomes the nodes' topology.kubernetes.io/zone label.
	Name   string `json:"name"`
	Router string `json:"router"`
	ASN    uint32 `json:"asn"`
}

// Calico BGP modes.
const (
	BGPMesh      = "mesh"
	BGPAsPerRack = "as-per-rack"
)

// ParseRacks reads --rack values: NAME=ROUTER@ASN, comma-separated or
// repeated ("rack1=172.31.3.1@65001,rack2=172.31.4.1@65002").
func ParseRacks(values []string) ([]Rack, error) {
	var out []Rack
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			name, rest, ok1 := strings.Cut(f, "=")
			router, asn, ok2 := strings.Cut(rest, "@")
			n, err := strconv.ParseUint(asn, 10, 32)
			if !ok1 || !ok2 || err != nil {
				return nil, fmt.Errorf("--rack: %q is not NAME=ROUTER@ASN (e.g. rack1=172.31.3.1@65001)", f)
			}
			out = append(out, Rack{Name: name, Router: router, ASN: uint32(n)})
		}
	}
	return out, nil
}

// RackOf finds the rack whose router is on a node's subnet (the node's
// address with its prefix, as the node has it on its default-route
// interface): that router is where the node's iBGP session goes.
func (c *Config) RackOf(node string, subnet netip.Prefix) (Rack, error) {
	var found []Rack
	for _, r := range c.Calico.Racks {
		if a, err := netip.ParseAddr(r.Router); err == nil && subnet.Masked().Contains(a) {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		var all []string
		for _, r := range c.Calico.Racks {
			all = append(all, r.Name+" "+r.Router)
		}
		return Rack{}, fmt.Errorf("%s (%s): no rack's router is on its subnet (racks: %s); as-per-rack peering needs the node's router on its own subnet", node, subnet, strings.Join(all, ", "))
	default:
		return Rack{}, fmt.Errorf("%s (%s): racks %s and %s both have their router on its subnet", node, subnet, found[0].Name, found[1].Name)
	}
}

// Defaults as the user's kubespray inventory had them.
const (
	DefaultName          = "k8slab"
	DefaultServiceCIDR   = "10.96.0.0/12"
	DefaultPodCIDR       = "192.168.0.0/16"
	DefaultCalicoVersion = "v3.32.1"
	DefaultEncapsulation = "IPIP"
	DefaultAutodetect    = "kubernetes-internal-ip"
	DefaultBlockSize     = 26
)

// Parse reads a cluster file strictly: a misspelt field is an error, not a
// silently ignored setting.
func Parse(b []byte) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("cluster file: %w", err)
	}
	if c.APIVersion != APIVersion || c.Kind != Kind {
		return nil, fmt.Errorf("cluster file: want apiVersion %s, kind %s; got %q, %q", APIVersion, Kind, c.APIVersion, c.Kind)
	}
	return &c, nil
}

// Default fills what the user left out. Roles default from the node list,
// so it must run after flags are applied.
func (c *Config) Default() {
	c.APIVersion, c.Kind = APIVersion, Kind
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.KubernetesVersion == "" {
		c.KubernetesVersion = provision.DefaultKubernetesVersion
	}
	if c.ServiceCIDR == "" {
		c.ServiceCIDR = DefaultServiceCIDR
	}
	if c.PodCIDR == "" {
		c.PodCIDR = DefaultPodCIDR
	}
	if c.Calico.Version == "" {
		c.Calico.Version = DefaultCalicoVersion
	}
	if c.Calico.BGP == "" {
		c.Calico.BGP = BGPMesh
	}
	if c.Calico.Encapsulation == "" {
		c.Calico.Encapsulation = DefaultEncapsulation
		if c.Calico.BGP == BGPAsPerRack {
			// The fabric knows every pod block: nothing to tunnel.
			c.Calico.Encapsulation = "None"
		}
	}
	if c.Calico.Autodetect == "" {
		c.Calico.Autodetect = DefaultAutodetect
	}
	if c.Calico.BlockSize == 0 {
		c.Calico.BlockSize = DefaultBlockSize
	}
	if len(c.Nodes) == 0 {
		return
	}
	if c.ControlPlane == "" {
		c.ControlPlane = c.Nodes[0]
	}
	if len(c.Etcd) == 0 {
		if len(c.Nodes) >= 3 {
			c.Etcd = append([]string(nil), c.Nodes[:3]...)
		} else {
			c.Etcd = []string{c.ControlPlane}
		}
	}
	if len(c.Workers) == 0 {
		c.Workers = append([]string(nil), c.Nodes...)
	}
}

// Address is a node's host (name or IP address) without the user and
// port it may be written with ("admin@172.31.3.11:2222" → "172.31.3.11").
// Node lists are checked when the configuration is validated, so a node
// that reaches here parses.
func Address(node string) string {
	t, _ := ssh.ParseTarget(node)
	return t.Host
}

// StackedEtcd is true when etcd runs as kubeadm's static pod on the
// control plane rather than as k8slab-managed services.
func (c *Config) StackedEtcd() bool {
	return len(c.Etcd) == 1 && c.Etcd[0] == c.ControlPlane
}

// networkHint offers the network address of a prefix written with host
// bits set, as ip and ipcalc users expect.
func networkHint(p netip.Prefix, err error) string {
	if err != nil || !p.Addr().Is4() || p.Masked() == p {
		return ""
	}
	return fmt.Sprintf(": host bits are set, did you mean %s?", p.Masked())
}

// Validate reports every problem at once, each naming its field and value,
// so one run shows everything to fix.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Name != "" && !validName(c.Name) {
		bad("name: %q must be lower-case letters, digits and '-'", c.Name)
	}
	nodes := map[string]bool{}
	if len(c.Nodes) == 0 {
		bad("nodes: none given")
	}
	for _, n := range c.Nodes {
		t, err := ssh.ParseTarget(n)
		if err != nil {
			bad("nodes: %v", err)
			continue
		}
		if nodes[t.Host] {
			bad("nodes: %q is listed twice", t.Host)
		}
		nodes[t.Host] = true
	}
	member := func(field, n string) {
		t, err := ssh.ParseTarget(n)
		if err != nil {
			bad("%s: %v", field, err)
		} else if !nodes[t.Host] {
			bad("%s: %q is not one of --nodes", field, n)
		}
	}
	if c.ControlPlane != "" {
		member("control-plane", c.ControlPlane)
	}
	seen := map[string]bool{}
	for _, e := range c.Etcd {
		member("etcd", e)
		if seen[e] {
			bad("etcd: %q is listed twice", e)
		}
		seen[e] = true
	}
	if n := len(c.Etcd); n > 0 && n%2 == 0 {
		bad("etcd: %d members (%s): etcd needs an odd number to keep quorum through a failure", n, strings.Join(c.Etcd, ","))
	}
	for _, w := range c.Workers {
		member("workers", w)
	}

	if _, err := provision.LookupRelease(c.KubernetesVersion); err != nil {
		bad("kubernetes-version: %v", err)
	} else if r, _ := provision.LookupRelease(c.KubernetesVersion); !slices.Contains(r.Calico, c.Calico.Version) {
		bad("calico-version: %s is not supported with Kubernetes %s (supported: %s)", c.Calico.Version, c.KubernetesVersion, strings.Join(r.Calico, ", "))
	}
	switch c.Calico.Encapsulation {
	case "IPIP", "VXLAN", "None":
	default:
		bad("calico-encapsulation: %q is not IPIP, VXLAN or None", c.Calico.Encapsulation)
	}
	switch c.Calico.BGP {
	case BGPMesh:
		if len(c.Calico.Racks) > 0 {
			bad("calico racks: only used with calico bgp %s (bgp is %s)", BGPAsPerRack, c.Calico.BGP)
		}
	case BGPAsPerRack:
		if c.Calico.Encapsulation != "None" {
			bad("calico-encapsulation: %s with calico bgp %s: the fabric routes pods natively, encapsulation must be None", c.Calico.Encapsulation, BGPAsPerRack)
		}
		if len(c.Calico.Racks) == 0 {
			bad("calico racks: calico bgp %s needs the racks' routers (--rack NAME=ROUTER@ASN, or --lab FILE)", BGPAsPerRack)
		}
	default:
		bad("calico-bgp: %q is not %s or %s", c.Calico.BGP, BGPMesh, BGPAsPerRack)
	}
	rackNames, routers := map[string]bool{}, map[string]bool{}
	for _, r := range c.Calico.Racks {
		if !validLabelValue(r.Name) {
			bad("calico racks: name %q must be letters, digits, '-', '_' or '.' (at most 63; it becomes the nodes' topology.kubernetes.io/zone label)", r.Name)
		}
		if rackNames[r.Name] {
			bad("calico racks: %q is listed twice", r.Name)
		}
		rackNames[r.Name] = true
		if a, err := netip.ParseAddr(r.Router); err != nil || !a.Is4() {
			bad("calico racks: %s: router %q is not an IPv4 address", r.Name, r.Router)
		} else if routers[r.Router] {
			bad("calico racks: %s: router %s is another rack's too", r.Name, r.Router)
		}
		routers[r.Router] = true
		if r.ASN == 0 {
			bad("calico racks: %s: asn must be 1-4294967295", r.Name)
		}
	}
	if c.Calico.BlockSize < 20 || c.Calico.BlockSize > 32 {
		bad("calico block size: %d is outside 20-32", c.Calico.BlockSize)
	}

	switch c.KubeProxyMode {
	case "", "iptables", "nftables":
	default:
		bad("kube-proxy-mode: %q is not iptables or nftables", c.KubeProxyMode)
	}
	svc, svcErr := netip.ParsePrefix(c.ServiceCIDR)
	if svcErr != nil || !svc.Addr().Is4() || svc.Masked() != svc {
		bad("service-cidr: %q is not an IPv4 network address with prefix (e.g. 172.31.64.0/18)%s", c.ServiceCIDR, networkHint(svc, svcErr))
		svcErr = errors.New("bad")
	}
	pod, podErr := netip.ParsePrefix(c.PodCIDR)
	if podErr != nil || !pod.Addr().Is4() || pod.Masked() != pod {
		bad("pod-cidr: %q is not an IPv4 network address with prefix (e.g. 172.31.128.0/18)%s", c.PodCIDR, networkHint(pod, podErr))
		podErr = errors.New("bad")
	}
	if svcErr == nil && podErr == nil && svc.Overlaps(pod) {
		bad("service-cidr %s and pod-cidr %s overlap", svc, pod)
	}
	if svcErr == nil && (svc.Bits() < 12 || svc.Bits() > 28) {
		bad("service-cidr: %s must be between /12 (the API server's limit) and /28", svc)
	}
	if podErr == nil && c.Calico.BlockSize >= 20 && c.Calico.BlockSize <= 32 {
		if pod.Bits() > c.Calico.BlockSize {
			bad("pod-cidr: %s is smaller than one Calico block (/%d)", pod, c.Calico.BlockSize)
		} else if blocks := 1 << (c.Calico.BlockSize - pod.Bits()); len(c.Nodes) > 0 && blocks < len(c.Nodes) {
			bad("pod-cidr: %s holds %d blocks of /%d, fewer than the %d nodes", pod, blocks, c.Calico.BlockSize, len(c.Nodes))
		}
	}
	for _, n := range c.Nodes {
		t, err := ssh.ParseTarget(n)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(t.Host); err == nil {
			for _, p := range []struct {
				field  string
				prefix netip.Prefix
				err    error
			}{{"service-cidr", svc, svcErr}, {"pod-cidr", pod, podErr}} {
				if p.err == nil && p.prefix.Contains(a) {
					bad("%s %s contains node address %s", p.field, p.prefix, a)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// CheckNetworks is the second half of the CIDR checks, once facts are in:
// the service and pod networks must not overlap any node's own subnet or
// the subnet of its default route.
func (c *Config) CheckNetworks(nodeSubnets map[string][]netip.Prefix) error {
	var errs []error
	for _, f := range []struct{ field, cidr string }{{"service-cidr", c.ServiceCIDR}, {"pod-cidr", c.PodCIDR}} {
		field := f.field
		p, err := netip.ParsePrefix(f.cidr)
		if err != nil {
			continue
		}
		for _, n := range c.Nodes {
			for _, sub := range nodeSubnets[n] {
				if p.Overlaps(sub) {
					errs = append(errs, fmt.Errorf("%s %s overlaps node %s's network %s", field, p, n, sub))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// validLabelValue is Kubernetes' rule for a label value (non-empty here).
func validLabelValue(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && !((r == '-' || r == '_' || r == '.') && i > 0 && i < len(s)-1) {
			return false
		}
	}
	return true
}

func validName(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' && i > 0 && i < len(s)-1) {
			return false
		}
	}
	return true
}
