package calico

// The few Calico resources k8slab writes, as the CRDs of the manifest
// install define them (crd.projectcalico.org/v1). github.com/projectcalico/api
// is not served here, so these are our own types; a test checks every field
// against the CRD schemas in the release manifest.

// CRDGroupVersion is the API of Calico's CRDs in manifest mode.
const CRDGroupVersion = "crd.projectcalico.org/v1"

// TypeMeta and ObjectMeta are the Kubernetes object header.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// ObjectMeta names a cluster-scoped object.
type ObjectMeta struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// IPPool is a range Calico assigns pod addresses from.
type IPPool struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta `json:"metadata"`
	Spec     IPPoolSpec `json:"spec"`
}

// IPPoolSpec mirrors Calico's IPPool spec.
type IPPoolSpec struct {
	CIDR         string `json:"cidr"`
	BlockSize    int    `json:"blockSize,omitempty"`
	IPIPMode     string `json:"ipipMode,omitempty"`
	VXLANMode    string `json:"vxlanMode,omitempty"`
	NATOutgoing  bool   `json:"natOutgoing"`
	NodeSelector string `json:"nodeSelector,omitempty"`
	Disabled     bool   `json:"disabled"`
}

// FelixConfiguration tunes the per-node agent.
type FelixConfiguration struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta             `json:"metadata"`
	Spec     FelixConfigurationSpec `json:"spec"`
}

// FelixConfigurationSpec holds the settings k8slab sets.
type FelixConfigurationSpec struct {
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
	// ReportingInterval "0s" stops Felix writing status to the datastore
	// every 30 s, which a small lab does not need.
	ReportingInterval string `json:"reportingInterval,omitempty"`
	// BPFEnabled false keeps the iptables/nftables data plane, in which
	// NetworkPolicy is enforced as kube-proxy's rules expect.
	BPFEnabled bool `json:"bpfEnabled"`
	// UsageReportingEnabled false: Felix does not report the cluster's
	// version and size to projectcalico.org (on by default), which an
	// offline lab cannot reach and a user did not ask for.
	UsageReportingEnabled bool `json:"usageReportingEnabled"`
}

// BGPConfiguration sets the cluster's BGP behaviour.
type BGPConfiguration struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta           `json:"metadata"`
	Spec     BGPConfigurationSpec `json:"spec"`
}

// BGPConfigurationSpec holds the settings k8slab sets.
type BGPConfigurationSpec struct {
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
	// NodeToNodeMeshEnabled: nodes peer with each other (off when they
	// peer with their racks' routers instead).
	NodeToNodeMeshEnabled bool   `json:"nodeToNodeMeshEnabled"`
	ASNumber              uint32 `json:"asNumber,omitempty"`
}

// Resources returns the objects k8slab applies for a cluster.
func Resources(o Options) ([]any, error) {
	ipip, vxlan, err := o.Modes()
	if err != nil {
		return nil, err
	}
	meta := func(kind string) TypeMeta { return TypeMeta{APIVersion: CRDGroupVersion, Kind: kind} }
	// Calico's own default pool name, so calico-node adopts it instead of
	// creating a second pool from the manifest's env.
	pool := IPPool{TypeMeta: meta("IPPool"), Metadata: ObjectMeta{Name: "default-ipv4-ippool"},
		Spec: IPPoolSpec{CIDR: o.PodCIDR, BlockSize: o.BlockSize, IPIPMode: ipip, VXLANMode: vxlan, NATOutgoing: true, NodeSelector: "all()"}}
	felix := FelixConfiguration{TypeMeta: meta("FelixConfiguration"), Metadata: ObjectMeta{Name: "default"},
		Spec: FelixConfigurationSpec{LogSeverityScreen: "Info", ReportingInterval: "0s"}}
	bgp := BGPConfiguration{TypeMeta: meta("BGPConfiguration"), Metadata: ObjectMeta{Name: "default"},
		Spec: BGPConfigurationSpec{LogSeverityScreen: "Info", NodeToNodeMeshEnabled: o.Encapsulation != "VXLAN" && len(o.Racks) == 0, ASNumber: 64512}}
	out := []any{pool, felix, bgp}
	for _, p := range Peers(o.Racks) {
		out = append(out, p)
	}
	return out, nil
}
