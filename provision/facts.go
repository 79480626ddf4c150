// Package provision prepares machines for Kubernetes. Its first step is
// learning what each machine is: facts drive preflight and every later
// "is this already done?" decision.
package provision

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/k8slab/k8slab/internal/host"
	nodescript "github.com/k8slab/k8slab/scripts/node"
)

// Facts describe one node as preflight and provisioning need it.
type Facts struct {
	Hostname     string `json:"hostname"`
	OSID         string `json:"os_id"`
	OSVersion    string `json:"os_version"`
	OSPretty     string `json:"os_pretty"`
	Kernel       string `json:"kernel"`
	Arch         string `json:"arch"`
	CPUs         int    `json:"cpus"`
	MemoryMB     int    `json:"memory_mb"`
	SwapOn       bool   `json:"swap_on"`
	DefaultIface string `json:"default_iface,omitempty"`
	DefaultAddr  string `json:"default_addr,omitempty"`
	// CgroupVersion is 2 on the unified hierarchy, 1 on the legacy one,
	// 0 when /sys/fs/cgroup holds neither.
	CgroupVersion int    `json:"cgroup_version"`
	MachineID     string `json:"machine_id,omitempty"`
	ProductUUID   string `json:"product_uuid,omitempty"`
	Containerd    Binary `json:"containerd"`
	Kubelet       Binary `json:"kubelet"`
	// LabNode is "namespace" on a namespace-lab node: it shares the
	// workstation's filesystem, so nothing may be installed on it.
	LabNode string `json:"lab_node,omitempty"`
	// IPIP: the kernel has the ipip module (loaded, built in, or on disk),
	// which Calico's IPIP encapsulation needs.
	IPIP bool `json:"ipip"`
	// SysResource: processes on the node may hold CAP_SYS_RESOURCE (its
	// capability bounding set has it). A container node's does not, and
	// there runc cannot lower a container's OOM score.
	SysResource bool `json:"sys_resource"`
	// Nameservers counts the resolvers the kubelet hands to pods with the
	// node's DNS (CoreDNS's upstreams): systemd-resolved's file when it
	// runs, else /etc/resolv.conf. 0 on an isolated lab network.
	Nameservers int `json:"nameservers"`
}

// Binary says whether a program is installed, where, and at what version.
type Binary struct {
	Path    string `json:"path,omitempty"`
	Version string `json:"version,omitempty"`
}

// Present is true when the binary is on PATH.
func (b Binary) Present() bool { return b.Path != "" }

// FactsScript gathers the facts, without the versions (scripts/node/
// facts.sh), for callers that fold it into their own.
func FactsScript() string { return nodescript.Script("facts.sh") }

// GatherFacts reads a node's facts, versions included.
func GatherFacts(ctx context.Context, h host.Host) (Facts, error) {
	out, err := host.Output(ctx, h, nodescript.Script("facts.sh")+nodescript.Script("versions.sh"))
	if err != nil {
		return Facts{}, fmt.Errorf("facts: %w", err)
	}
	return ParseFacts(out)
}

// ParseFacts turns facts.sh's output into Facts.
func ParseFacts(out string) (Facts, error) {
	vals := nodescript.Parse(out)
	get := func(k string) string { return strings.TrimSpace(vals.Get(k)) }
	if get("kernel") == "" || get("arch") == "" {
		return Facts{}, fmt.Errorf("facts: unexpected output (is the remote shell POSIX?): %.200q", out)
	}
	num := func(k string) int {
		n, _ := strconv.Atoi(get(k))
		return n
	}
	f := Facts{
		Hostname:     get("hostname"),
		OSID:         get("os_id"),
		OSVersion:    get("os_version"),
		OSPretty:     get("os_pretty"),
		Kernel:       get("kernel"),
		Arch:         get("arch"),
		CPUs:         num("cpus"),
		MemoryMB:     num("mem_kb") / 1024,
		SwapOn:       num("swap_kb") > 0,
		DefaultIface: get("default_iface"),
		MachineID:    get("machine_id"),
		ProductUUID:  get("product_uuid"),
		Containerd:   Binary{Path: get("containerd_path"), Version: get("containerd_version")},
		Kubelet:      Binary{Path: get("kubelet_path"), Version: get("kubelet_version")},
	}
	f.DefaultAddr = get("default_addr")
	f.LabNode = get("lab_node")
	f.IPIP = get("ipip") == "yes"
	f.SysResource = get("sys_resource") == "yes"
	f.Nameservers = num("nameservers")
	switch get("cgroup_fs") {
	case "cgroup2fs":
		f.CgroupVersion = 2
	case "tmpfs": // the v1 layout: a tmpfs of per-controller mounts
		f.CgroupVersion = 1
	}
	return f, nil
}
