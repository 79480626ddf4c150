package kubespray

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/k8slab/k8slab/internal/cluster"
	yaml "go.yaml.in/yaml/v3"
)

// Result is an inventory as k8slab takes it.
type Result struct {
	Config *cluster.Config
	// KeyFiles are the hosts' ansible_ssh_private_key_file values.
	KeyFiles []string
	// Password is ansible_become_password (never printed or written).
	Password string
	// Ignored lists each variable or group k8slab does not use, once,
	// with why: "file:line: name: why".
	Ignored []string
}

// Load reads an inventory and converts it; the error lists every refusal.
func Load(path string) (*Result, error) {
	inv, err := Read(path)
	if err != nil {
		return nil, err
	}
	return inv.Convert()
}

// connectionVars are how Ansible reaches a host: per host, or for the
// whole cluster in group vars.
var connectionVars = []string{"ansible_user", "ansible_port", "ansible_ssh_private_key_file", "ansible_become", "ansible_become_password", "ansible_become_pass"}

// Convert judges the inventory and builds the cluster description.
func (inv *Inventory) Convert() (*Result, error) {
	r := &Result{Config: &cluster.Config{}}
	ignored := map[string]string{} // "pos: name" -> why
	ignore := func(p Pos, name, why string) { ignored[p.String()+": "+name] = why }

	// Groups: every child must exist; the role groups name the nodes.
	for _, g := range inv.sortedGroups() {
		for _, c := range g.Children {
			if _, ok := inv.Groups[c]; !ok {
				inv.refuse(g.Pos, "group %s: child group %s is defined nowhere", g.Name, c)
			}
		}
	}
	members := func(name string) []string { return inv.members(name, map[string]bool{}) }
	cps, workers, etcd := members("kube_control_plane"), members("kube_node"), members("etcd")
	if g, ok := inv.Groups["calico_rr"]; ok {
		if len(members("calico_rr")) > 0 {
			inv.refuse(g.Pos, "group calico_rr has hosts: k8slab does not deploy Calico route reflectors (its as-per-rack mode makes the racks' routers the reflectors)")
		} else {
			ignore(g.Pos, "[calico_rr]", "empty")
		}
	}
	if g, ok := inv.Groups["vault"]; ok {
		ignore(g.Pos, "[vault]", "k8slab generates its own PKI")
	}
	for _, g := range inv.sortedGroups() {
		switch g.Name {
		case "all", "ungrouped", "k8s_cluster", "kube_control_plane", "kube_node", "etcd", "calico_rr", "vault":
		default:
			ignore(g.Pos, "["+g.Name+"]", "not a kubespray role group")
		}
	}
	if len(cps) == 0 {
		inv.refuse(inv.firstPos(), "no host in kube_control_plane (kube-master)")
	} else if len(cps) > 1 {
		inv.refuse(inv.Groups["kube_control_plane"].Pos, "%d hosts in kube_control_plane (%s): k8slab installs one control plane", len(cps), strings.Join(cps, ", "))
	}
	inCluster := map[string]bool{}
	for _, n := range append(append(append([]string{}, cps...), workers...), etcd...) {
		inCluster[n] = true
	}

	// Cluster-wide variables: k8s_cluster's override all's.
	clusterVars := inv.groupVars("all", "k8s_cluster")
	// Hosts: the SSH target from ansible_host/port/user, node-ip from ip;
	// connection settings given for the whole cluster apply to every host
	// that does not set its own.
	for _, h := range inv.Hosts {
		for _, k := range connectionVars {
			if v, ok := clusterVars[k]; ok {
				if _, own := h.Vars[k]; !own {
					h.Vars[k] = v
				}
			}
		}
	}
	target := map[string]string{}
	addrs := map[string]string{}
	keys := map[string]bool{}
	for _, h := range inv.Hosts {
		if !inCluster[h.Name] {
			inv.refuse(h.Pos, "host %s is in no group of the cluster (kube_control_plane, kube_node, etcd)", h.Name)
			continue
		}
		addr := h.Name
		if v, ok := h.Vars["ansible_host"]; ok {
			addr = v.Raw
		}
		if other, dup := addrs[addr]; dup {
			inv.refuse(h.Pos, "hosts %s and %s are both %s", other, h.Name, addr)
		}
		addrs[addr] = h.Name
		t := addr
		if v, ok := h.Vars["ansible_port"]; ok {
			if n, err := strconv.Atoi(v.Raw); err != nil || n < 1 || n > 65535 {
				inv.refuse(v.Pos, "host %s: ansible_port %q is not a port", h.Name, v.Raw)
			} else {
				t = net.JoinHostPort(addr, v.Raw)
			}
		}
		if v, ok := h.Vars["ansible_user"]; ok {
			t = v.Raw + "@" + t
		}
		target[h.Name] = t
		for _, name := range sortedKeys(h.Vars) {
			v := h.Vars[name]
			switch name {
			case "ansible_host", "ansible_port", "ansible_user":
			case "ip":
				if v.Raw != addr {
					inv.refuse(v.Pos, "host %s: ip=%s differs from its SSH address %s: k8slab gives the kubelet the node's address on the route to the control plane", h.Name, v.Raw, addr)
				}
			case "access_ip":
				if v.Raw != addr {
					ignore(v.Pos, name, "k8slab reaches every node at its SSH address")
				}
			case "ansible_ssh_private_key_file":
				keys[v.Raw] = true
			case "ansible_become":
				ignore(v.Pos, name, "k8slab uses sudo whenever the login user is not root")
			case "ansible_become_password", "ansible_become_pass":
				r.Password = v.Raw
			case "peers", "local_as":
				if !isTrue(inv.calicoPeering()) {
					ignore(v.Pos, name, "calico_peer_with_router is not on")
				}
			default:
				inv.judgeVar(r, name, v, ignore)
			}
		}
	}
	for k := range keys {
		r.KeyFiles = append(r.KeyFiles, k)
	}
	sort.Strings(r.KeyFiles)
	// Nodes in the inventory's order; roles in their groups' order.
	roles := func(names []string) []string {
		var out []string
		for _, n := range names {
			if t, ok := target[n]; ok {
				out = append(out, t)
			}
		}
		return out
	}
	for _, h := range inv.Hosts {
		if t, ok := target[h.Name]; ok {
			r.Config.Nodes = append(r.Config.Nodes, t)
		}
	}
	if len(cps) == 1 {
		r.Config.ControlPlane = target[cps[0]]
	}
	r.Config.Etcd, r.Config.Workers = roles(etcd), roles(workers)

	for _, name := range sortedKeys(clusterVars) {
		if !slices.Contains(connectionVars, name) {
			inv.judgeVar(r, name, clusterVars[name], ignore)
		}
	}
	for _, g := range []string{"kube_control_plane", "kube_node", "etcd"} {
		vars := inv.groupVars(g)
		for _, name := range sortedKeys(vars) {
			ignore(vars[name].Pos, name, "k8slab takes cluster settings from all and k8s_cluster only")
		}
	}
	for g := range inv.GroupVars {
		if _, known := map[string]bool{"all": true, "k8s_cluster": true, "kube_control_plane": true, "kube_node": true, "etcd": true}[g]; !known {
			for name, v := range inv.GroupVars[g] {
				ignore(v.Pos, name, "group_vars of "+g+", not a kubespray role group")
			}
		}
	}
	inv.finishCalico(r)
	for k, why := range ignored {
		r.Ignored = append(r.Ignored, k+": "+why)
	}
	sort.Strings(r.Ignored)
	if len(inv.problems) > 0 {
		return nil, errors.New(strings.Join(inv.problems, "\n"))
	}
	return r, nil
}

// groupVars merges groups' variables, from group_vars files and the
// inventory itself, later groups winning.
func (inv *Inventory) groupVars(groups ...string) map[string]Value {
	out := map[string]Value{}
	for _, g := range groups {
		for k, v := range inv.GroupVars[g] {
			out[k] = v
		}
		if grp, ok := inv.Groups[g]; ok {
			for k, v := range grp.Vars {
				out[k] = v
			}
		}
	}
	return out
}

// calicoPeering is calico_peer_with_router as the group vars set it.
func (inv *Inventory) calicoPeering() string {
	return inv.groupVars("all", "k8s_cluster")["calico_peer_with_router"].Raw
}

// calico collects the Calico variables, judged together at the end.
type calicoVars struct {
	ipip, vxlan, backend, peer Value
}

// judgeVar maps one variable onto the cluster, refuses it, or ignores it.
func (inv *Inventory) judgeVar(r *Result, name string, v Value, ignore func(Pos, string, string)) {
	c := r.Config
	cidr := func(dst *string) {
		p, err := netip.ParsePrefix(v.Raw)
		if err != nil || !p.Addr().Is4() || p.Masked() != p {
			inv.refuse(v.Pos, "%s: %q is not an IPv4 network address with prefix", name, v.Raw)
			return
		}
		*dst = v.Raw
	}
	switch name {
	case "kube_service_addresses":
		cidr(&c.ServiceCIDR)
	case "kube_pods_subnet":
		cidr(&c.PodCIDR)
	case "kube_network_node_prefix":
		n, err := strconv.Atoi(v.Raw)
		if err != nil || n < 20 || n > 32 {
			inv.refuse(v.Pos, "%s: %q is not a prefix length of 20-32 (it becomes Calico's block size)", name, v.Raw)
			return
		}
		c.Calico.BlockSize = n
	case "kube_network_plugin":
		if v.Raw != "calico" {
			inv.refuse(v.Pos, "%s: %s: k8slab installs Calico only", name, v.Raw)
		}
	case "enable_network_policy":
		if !isTrue(v.Raw) {
			inv.refuse(v.Pos, "%s: %s: Calico always enforces NetworkPolicy in k8slab's clusters", name, v.Raw)
		}
	case "kube_version":
		ver := v.Raw
		if !strings.HasPrefix(ver, "v") {
			ver = "v" + ver
		}
		c.KubernetesVersion = ver
	case "cluster_name", "dns_domain":
		if v.Raw != "cluster.local" {
			inv.refuse(v.Pos, "%s: %s: k8slab's clusters use the DNS domain cluster.local", name, v.Raw)
		}
	case "kube_proxy_mode":
		switch v.Raw {
		case "iptables", "nftables":
			c.KubeProxyMode = v.Raw
		default:
			inv.refuse(v.Pos, "%s: %s: k8slab runs kube-proxy in iptables or nftables mode", name, v.Raw)
		}
	case "container_manager":
		if v.Raw != "containerd" {
			inv.refuse(v.Pos, "%s: %s: k8slab installs containerd", name, v.Raw)
		}
	case "calico_ipip_mode":
		inv.calico.ipip = v
	case "calico_vxlan_mode":
		inv.calico.vxlan = v
	case "calico_network_backend":
		inv.calico.backend = v
	case "calico_peer_with_router":
		inv.calico.peer = v
	case "etcd_deployment_type":
		if v.Raw != "host" {
			ignore(v.Pos, name, "k8slab runs etcd as a systemd service on the etcd nodes (kubespray's host type)")
		}
	default:
		ignore(v.Pos, name, ignoreReason(name))
	}
}

func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "true", "yes", "on", "1":
		return true
	}
	return false
}

// ignoreReason says why a variable k8slab does not read changes nothing.
func ignoreReason(name string) string {
	switch {
	case strings.HasPrefix(name, "ansible_"):
		return "an Ansible connection setting k8slab has no use for"
	case strings.HasPrefix(name, "download_"), strings.HasSuffix(name, "_download_url"):
		return "k8slab downloads the pinned releases itself or takes --artifacts"
	case strings.HasPrefix(name, "bootstrap_os"):
		return "k8slab reads the OS from each node"
	}
	return "not a setting k8slab has"
}

// finishCalico turns kubespray's Calico modes into k8slab's encapsulation.
func (inv *Inventory) finishCalico(r *Result) {
	cv := inv.calico
	mode := func(v Value) string {
		switch v.Raw {
		case "", "Never", "never":
			return ""
		case "Always", "CrossSubnet":
			return v.Raw
		}
		inv.refuse(v.Pos, "%q is not Always, CrossSubnet or Never", v.Raw)
		return ""
	}
	ipip, vxlan := mode(cv.ipip), mode(cv.vxlan)
	switch {
	case ipip != "" && vxlan != "":
		inv.refuse(cv.vxlan.Pos, "calico_ipip_mode and calico_vxlan_mode are both on: Calico's pool has one encapsulation")
	case ipip != "":
		r.Config.Calico.Encapsulation = "IPIP"
	case vxlan != "" || cv.backend.Raw == "vxlan":
		r.Config.Calico.Encapsulation = "VXLAN"
	case cv.ipip.Raw != "" || cv.vxlan.Raw != "":
		r.Config.Calico.Encapsulation = "None"
	}
	if ipip == "Always" || vxlan == "Always" {
		p := cv.ipip.Pos
		if vxlan == "Always" {
			p = cv.vxlan.Pos
		}
		inv.refuse(p, "encapsulation Always: k8slab encapsulates between subnets only (CrossSubnet), set CrossSubnet")
	}
	if b := cv.backend.Raw; b != "" && b != "bird" && b != "vxlan" {
		inv.refuse(cv.backend.Pos, "calico_network_backend: %s: k8slab runs Calico with bird (BGP) or vxlan", b)
	}
	if isTrue(cv.peer.Raw) {
		inv.peersToRacks(r)
	}
}

// peersToRacks maps kubespray's calico_peer_with_router (each host's
// peers: [{router_id, as}] and local_as) onto the as-per-rack mode: one
// rack per router, named after its address. k8slab's model is one iBGP
// session per node with its rack's router, so a host with other than one
// peer, or a local_as other than its router's AS, is refused.
func (inv *Inventory) peersToRacks(r *Result) {
	racks := map[string]cluster.Rack{}
	for _, h := range inv.Hosts {
		v, ok := h.Vars["peers"]
		if !ok {
			inv.refuse(inv.calico.peer.Pos, "calico_peer_with_router: host %s has no peers", h.Name)
			continue
		}
		var peers []struct {
			RouterID string `yaml:"router_id"`
			AS       string `yaml:"as"`
		}
		if err := yaml.Unmarshal([]byte(v.Raw), &peers); err != nil || len(peers) != 1 {
			inv.refuse(v.Pos, "host %s: peers: k8slab peers each node with exactly one router (its rack's), given as [{router_id: ..., as: ...}]", h.Name)
			continue
		}
		p := peers[0]
		asn, err := strconv.ParseUint(p.AS, 10, 32)
		if _, aerr := netip.ParseAddr(p.RouterID); err != nil || aerr != nil || asn == 0 {
			inv.refuse(v.Pos, "host %s: peers: router_id %q and as %q must be an address and an AS number", h.Name, p.RouterID, p.AS)
			continue
		}
		if la, ok := h.Vars["local_as"]; ok && la.Raw != p.AS {
			inv.refuse(la.Pos, "host %s: local_as %s differs from its router's AS %s: k8slab's as-per-rack mode has each rack's nodes in their router's AS", h.Name, la.Raw, p.AS)
		}
		racks[p.RouterID] = cluster.Rack{Name: "rack-" + strings.ReplaceAll(p.RouterID, ".", "-"), Router: p.RouterID, ASN: uint32(asn)}
	}
	var names []string
	for k := range racks {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		r.Config.Calico.Racks = append(r.Config.Calico.Racks, racks[k])
	}
	r.Config.Calico.BGP = cluster.BGPAsPerRack
	r.Config.Calico.Encapsulation = "None"
}

func (inv *Inventory) members(group string, seen map[string]bool) []string {
	if seen[group] {
		return nil
	}
	seen[group] = true
	g, ok := inv.Groups[group]
	if !ok {
		return nil
	}
	out := append([]string{}, g.Hosts...)
	for _, c := range g.Children {
		out = append(out, inv.members(c, seen)...)
	}
	// Each host once, in the order first named.
	var uniq []string
	have := map[string]bool{}
	for _, h := range out {
		if !have[h] {
			have[h] = true
			uniq = append(uniq, h)
		}
	}
	return uniq
}

func (inv *Inventory) sortedGroups() []*Group {
	var out []*Group
	for _, g := range inv.Groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (inv *Inventory) firstPos() Pos {
	if len(inv.Hosts) > 0 {
		return inv.Hosts[0].Pos
	}
	for _, g := range inv.sortedGroups() {
		return g.Pos
	}
	return Pos{"inventory", 1}
}

func sortedKeys(m map[string]Value) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
