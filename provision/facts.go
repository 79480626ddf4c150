// Package provision prepares machines for Kubernetes. Its first step is
// learning what each machine is: facts drive preflight and every later
// "is this already done?" decision.
package provision

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/k8slab/k8slab/internal/host"
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

// factsScript gathers everything in one round trip; it only reads.
// Each line is key=value so parsing does not depend on tool output layout.
// Files are read with the shell's own read, not cat or uname: on the
// saturated emulated control plane every process start cost 1-2 s.
const factsScript = `
[ -r /etc/os-release ] && . /etc/os-release
echo "os_id=${ID:-}"
echo "os_version=${VERSION_ID:-}"
echo "os_pretty=${PRETTY_NAME:-}"
v=; { read -r v < /proc/sys/kernel/osrelease; } 2>/dev/null; echo "kernel=$v"
echo "arch=$(uname -m)"
v=; { read -r v < /proc/sys/kernel/hostname; } 2>/dev/null; echo "hostname=$v"
echo "cpus=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
awk '/^MemTotal:/{print "mem_kb=" $2} /^SwapTotal:/{print "swap_kb=" $2}' /proc/meminfo
dev=$(ip -4 route show default 2>/dev/null | awk '{for(i=1;i<NF;i++) if($i=="dev"){print $(i+1); exit}}')
echo "default_iface=$dev"
[ -n "$dev" ] && echo "default_addr=$(ip -4 -o addr show dev "$dev" 2>/dev/null | awk '{print $4; exit}')"
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then echo "cgroup_fs=cgroup2fs"; else echo "cgroup_fs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"; fi
v=; { read -r v < /etc/machine-id; } 2>/dev/null; echo "machine_id=$v"
v=; { read -r v < /sys/class/dmi/id/product_uuid; } 2>/dev/null; echo "product_uuid=$v"
echo "containerd_path=$(command -v containerd 2>/dev/null)"
echo "kubelet_path=$(command -v kubelet 2>/dev/null)"
echo "lab_node=${K8SLAB_LAB_NODE:-}"
r=/etc/resolv.conf; [ -s /run/systemd/resolve/resolv.conf ] && r=/run/systemd/resolve/resolv.conf
echo "nameservers=$(grep -cE '^[[:space:]]*nameserver[[:space:]]' "$r" 2>/dev/null)"
# Never by looking tunl0 up: a lookup by name loads ipip and makes tunl0.
v=; { read -r v < /proc/sys/kernel/osrelease; } 2>/dev/null
c=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status 2>/dev/null)
if [ -n "$c" ] && [ $((0x$c >> 24 & 1)) = 1 ]; then echo sys_resource=yes; else echo sys_resource=no; fi
if [ -d /sys/module/ipip ] || grep -qs '/ipip\.ko' "/lib/modules/$v/modules.dep" "/lib/modules/$v/modules.builtin"; then echo ipip=yes; else echo ipip=no; fi
true
`

// versionsScript starts the binaries to ask their versions: `kubelet
// --version` alone took 28 s on the saturated emulated control plane, so
// only `k8slab facts` asks (preflight needs no versions: provision checks
// the files' checksums).
const versionsScript = `echo "containerd_version=$(containerd --version 2>/dev/null | awk '{print $3}')"
echo "kubelet_version=$(kubelet --version 2>/dev/null | awk '{print $2}')"
`

// FactsScript is factsScript without the versions, for callers that fold
// it into their own.
func FactsScript() string { return factsScript }

// GatherFacts reads a node's facts, versions included.
func GatherFacts(ctx context.Context, h host.Host) (Facts, error) {
	out, err := host.Output(ctx, h, factsScript+versionsScript)
	if err != nil {
		return Facts{}, fmt.Errorf("facts: %w", err)
	}
	return ParseFacts(out)
}

// ParseFacts turns factsScript's output into Facts.
func ParseFacts(out string) (Facts, error) {
	kv := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			kv[k] = strings.TrimSpace(v)
		}
	}
	if kv["kernel"] == "" || kv["arch"] == "" {
		return Facts{}, fmt.Errorf("facts: unexpected output (is the remote shell POSIX?): %.200q", out)
	}
	num := func(k string) int {
		n, _ := strconv.Atoi(kv[k])
		return n
	}
	f := Facts{
		Hostname:     kv["hostname"],
		OSID:         kv["os_id"],
		OSVersion:    kv["os_version"],
		OSPretty:     kv["os_pretty"],
		Kernel:       kv["kernel"],
		Arch:         kv["arch"],
		CPUs:         num("cpus"),
		MemoryMB:     num("mem_kb") / 1024,
		SwapOn:       num("swap_kb") > 0,
		DefaultIface: kv["default_iface"],
		MachineID:    kv["machine_id"],
		ProductUUID:  kv["product_uuid"],
		Containerd:   Binary{Path: kv["containerd_path"], Version: kv["containerd_version"]},
		Kubelet:      Binary{Path: kv["kubelet_path"], Version: kv["kubelet_version"]},
	}
	f.DefaultAddr = kv["default_addr"]
	f.LabNode = kv["lab_node"]
	f.IPIP = kv["ipip"] == "yes"
	f.SysResource = kv["sys_resource"] == "yes"
	f.Nameservers = num("nameservers")
	switch kv["cgroup_fs"] {
	case "cgroup2fs":
		f.CgroupVersion = 2
	case "tmpfs": // the v1 layout: a tmpfs of per-controller mounts
		f.CgroupVersion = 1
	}
	return f, nil
}
