// Package topology describes a lab network (routers, bridges, nodes) and
// builds it from network namespaces, veth pairs, bridges, BIRD and sshd, so
// k8slab is tested across the same routed fabric the user has in GNS3.
package topology

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// APIVersion and Kind identify a lab description.
const (
	APIVersion = "k8slab.dev/v1alpha1"
	Kind       = "Lab"
)

// Spec is a lab description file.
type Spec struct {
	APIVersion  string      `json:"apiVersion"`
	Kind        string      `json:"kind"`
	Name        string      `json:"name"`
	Workstation Workstation `json:"workstation"`
	Routers     []Router    `json:"routers"`
	Nodes       []Node      `json:"nodes"`
	Login       Login       `json:"login"`
}

// Workstation is where k8slab runs: the GNS3 host's gnsbr0 uplink.
type Workstation struct {
	Bridge  string  `json:"bridge"`
	Address string  `json:"address"`
	Routes  []Route `json:"routes,omitempty"`
}

// Route is a static route.
type Route struct {
	To  string `json:"to"`
	Via string `json:"via"`
}

// Router is a BIRD router.
type Router struct {
	Name       string      `json:"name"`
	ASN        uint32      `json:"asn"`
	Interfaces []Interface `json:"interfaces"`
	Bridges    []Bridge    `json:"bridges,omitempty"`
	Gateway    string      `json:"gateway,omitempty"`
	BGP        []Neighbor  `json:"bgp"`
	// SSH runs an sshd on the router, e.g. to serve as a jump host.
	SSH bool `json:"ssh,omitempty"`
}

// Interface is a routed port. Connect names the other end as member/port
// (a router interface or a bridge); a link is declared on one side only.
type Interface struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Connect string `json:"connect,omitempty"`
}

// Bridge is an L2 segment inside a router that nodes plug into.
type Bridge struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

// Neighbor is an eBGP session.
type Neighbor struct {
	Name     string `json:"name"`
	Neighbor string `json:"neighbor"`
	ASN      uint32 `json:"asn"`
}

// Node is a Kubernetes machine: in the namespace lab, an sshd in its own
// network and UTS namespace.
type Node struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Gateway string `json:"gateway"`
	Connect string `json:"connect"`
	// MemoryMB and CPUs size the node when it is a VM (default 2048, 2).
	MemoryMB int `json:"memoryMB,omitempty"`
	CPUs     int `json:"cpus,omitempty"`
	// Nice (0-19) lowers a VM's CPU priority: emulated VMs share few host
	// cores, and a starved kube-apiserver misses its own start-up timeouts
	// while nodes that mostly wait for it keep the cores busy.
	Nice int `json:"nice,omitempty"`
}

// Login is how nodes accept logins: the GNS3 image logs in as root/gns3;
// extra users exercise the sudo paths.
type Login struct {
	RootPassword string `json:"rootPassword,omitempty"`
	Users        []User `json:"users,omitempty"`
}

// User is a non-root login on every node.
type User struct {
	Name     string `json:"name"`
	Password string `json:"password,omitempty"`
	// Sudo is "nopasswd", "password" or "" (no sudo right).
	Sudo string `json:"sudo,omitempty"`
}

// Parse reads and validates a lab description.
func Parse(b []byte) (*Spec, error) {
	var s Spec
	if err := yaml.UnmarshalStrict(b, &s); err != nil {
		return nil, fmt.Errorf("lab description: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// maxIfName is IFNAMSIZ-1: the kernel refuses longer interface names.
const maxIfName = 15

// Validate reports the first inconsistency, naming the field.
func (s *Spec) Validate() error {
	if s.APIVersion != APIVersion || s.Kind != Kind {
		return fmt.Errorf("lab description: want apiVersion %s, kind %s; got %q, %q", APIVersion, Kind, s.APIVersion, s.Kind)
	}
	if !nameRE.MatchString(s.Name) || len(s.Name) > 20 {
		return fmt.Errorf("name: %q must be lower-case letters, digits and '-', at most 20 characters", s.Name)
	}
	if len(s.Nodes) == 0 {
		return fmt.Errorf("nodes: a lab needs at least one node")
	}
	members := map[string]bool{WorkstationName: true}
	ports := map[string]portKind{} // "member/port" -> kind
	wsAddr, err := netip.ParsePrefix(s.Workstation.Address)
	if err != nil {
		return fmt.Errorf("workstation.address: %v", err)
	}
	if err := checkIfName("workstation.bridge", s.Workstation.Bridge); err != nil {
		return err
	}
	ports[WorkstationName+"/"+s.Workstation.Bridge] = bridgePort
	subnets := map[string]netip.Prefix{WorkstationName + "/" + s.Workstation.Bridge: wsAddr.Masked()}
	for i, r := range s.Workstation.Routes {
		if _, err := netip.ParsePrefix(r.To); err != nil {
			return fmt.Errorf("workstation.routes[%d].to: %v", i, err)
		}
		if err := inSubnet(fmt.Sprintf("workstation.routes[%d].via", i), r.Via, wsAddr); err != nil {
			return err
		}
	}
	addrs := map[netip.Addr]string{wsAddr.Addr(): "workstation"}
	claim := func(field, a string) (netip.Prefix, error) {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return p, fmt.Errorf("%s: %v", field, err)
		}
		if other, dup := addrs[p.Addr()]; dup {
			return p, fmt.Errorf("%s: address %s is already used by %s", field, p.Addr(), other)
		}
		addrs[p.Addr()] = field
		return p, nil
	}
	for i, r := range s.Routers {
		f := fmt.Sprintf("routers[%d]", i)
		if err := checkMember(f, r.Name, members); err != nil {
			return err
		}
		if r.ASN == 0 {
			return fmt.Errorf("%s (%s).asn: missing", f, r.Name)
		}
		if len(r.Interfaces) == 0 {
			return fmt.Errorf("%s (%s).interfaces: a router needs at least one", f, r.Name)
		}
		// A port is a routed interface or a bridge: both are named,
		// addressed, and unique within their router.
		declare := func(field, name, addr string, kind portKind) error {
			if err := checkIfName(field+".name", name); err != nil {
				return err
			}
			p, err := claim(field+".address", addr)
			if err != nil {
				return err
			}
			if _, dup := ports[r.Name+"/"+name]; dup {
				return fmt.Errorf("%s.name: %s is declared twice", field, name)
			}
			ports[r.Name+"/"+name] = kind
			subnets[r.Name+"/"+name] = p.Masked()
			return nil
		}
		for j, in := range r.Interfaces {
			if err := declare(fmt.Sprintf("%s (%s).interfaces[%d]", f, r.Name, j), in.Name, in.Address, routedPort); err != nil {
				return err
			}
		}
		for j, b := range r.Bridges {
			if err := declare(fmt.Sprintf("%s (%s).bridges[%d]", f, r.Name, j), b.Name, b.Address, bridgePort); err != nil {
				return err
			}
		}
		if r.Gateway != "" {
			if _, err := netip.ParseAddr(r.Gateway); err != nil {
				return fmt.Errorf("%s (%s).gateway: %v", f, r.Name, err)
			}
		}
	}
	for i, n := range s.Nodes {
		f := fmt.Sprintf("nodes[%d]", i)
		if err := checkMember(f, n.Name, members); err != nil {
			return err
		}
		p, err := claim(f+" ("+n.Name+").address", n.Address)
		if err != nil {
			return err
		}
		if err := inSubnet(f+" ("+n.Name+").gateway", n.Gateway, p); err != nil {
			return err
		}
		if ports[n.Connect] != bridgePort {
			return fmt.Errorf("%s (%s).connect: %q is not a bridge (want router/bridge, e.g. leaf1/br0)", f, n.Name, n.Connect)
		}
		if subnets[n.Connect] != p.Masked() {
			return fmt.Errorf("%s (%s).address: %s is not in %s's subnet %s", f, n.Name, n.Address, n.Connect, subnets[n.Connect])
		}
		if n.Nice < 0 || n.Nice > 19 {
			return fmt.Errorf("%s (%s).nice: %d is outside 0-19", f, n.Name, n.Nice)
		}
		if n.CPUs < 0 || n.CPUs > 256 {
			return fmt.Errorf("%s (%s).cpus: %d is outside 1-256", f, n.Name, n.CPUs)
		}
		if n.MemoryMB < 0 {
			return fmt.Errorf("%s (%s).memoryMB: %d is negative", f, n.Name, n.MemoryMB)
		}
	}
	// Every routed port is wired exactly once, so no interface is left
	// dangling and no link is created twice.
	wired := map[string]string{}
	for _, r := range s.Routers {
		for _, in := range r.Interfaces {
			if in.Connect == "" {
				continue
			}
			here := r.Name + "/" + in.Name
			kind, ok := ports[in.Connect]
			if !ok {
				return fmt.Errorf("router %s interface %s: connect: %q does not exist", r.Name, in.Name, in.Connect)
			}
			if subnets[in.Connect] != subnets[here] {
				return fmt.Errorf("router %s interface %s: %s and %s are in different subnets (%s, %s)", r.Name, in.Name, here, in.Connect, subnets[here], subnets[in.Connect])
			}
			for _, end := range []string{here, in.Connect} {
				if end == in.Connect && kind == bridgePort {
					continue // many ports may join one bridge
				}
				if prev, dup := wired[end]; dup {
					return fmt.Errorf("router %s interface %s: %s is already wired by %s", r.Name, in.Name, end, prev)
				}
				wired[end] = here
			}
		}
	}
	for _, r := range s.Routers {
		for _, in := range r.Interfaces {
			if _, ok := wired[r.Name+"/"+in.Name]; !ok {
				return fmt.Errorf("router %s interface %s: not connected to anything (add connect: on one side)", r.Name, in.Name)
			}
		}
		for j, nb := range r.BGP {
			f := fmt.Sprintf("router %s bgp[%d] (%s)", r.Name, j, nb.Name)
			a, err := netip.ParseAddr(nb.Neighbor)
			if err != nil {
				return fmt.Errorf("%s.neighbor: %v", f, err)
			}
			if nb.ASN == 0 {
				return fmt.Errorf("%s.asn: missing", f)
			}
			if !nameRE.MatchString(nb.Name) {
				return fmt.Errorf("%s.name: %q is not a valid protocol name", f, nb.Name)
			}
			if _, ok := localAddrFor(r, a); !ok {
				return fmt.Errorf("%s.neighbor: %s is not on any of %s's subnets", f, a, r.Name)
			}
		}
	}
	for i, u := range s.Login.Users {
		if !nameRE.MatchString(u.Name) || u.Name == "root" {
			return fmt.Errorf("login.users[%d].name: %q is not a valid user name", i, u.Name)
		}
		switch u.Sudo {
		case "", "nopasswd":
		case "password":
			if u.Password == "" {
				return fmt.Errorf("login.users[%d] (%s): sudo: password needs a password", i, u.Name)
			}
		default:
			return fmt.Errorf("login.users[%d] (%s).sudo: %q is not nopasswd or password", i, u.Name, u.Sudo)
		}
	}
	return nil
}

type portKind int

const (
	noPort portKind = iota
	routedPort
	bridgePort
)

// WorkstationName is the namespace where k8slab runs.
const WorkstationName = "workstation"

func checkMember(field, name string, seen map[string]bool) error {
	if !nameRE.MatchString(name) || len(name) > 20 {
		return fmt.Errorf("%s.name: %q must be lower-case letters, digits and '-', at most 20 characters", field, name)
	}
	if seen[name] {
		return fmt.Errorf("%s.name: %q is used twice", field, name)
	}
	seen[name] = true
	return nil
}

func checkIfName(field, n string) error {
	if n == "" || len(n) > maxIfName || strings.ContainsAny(n, "/ \t") {
		return fmt.Errorf("%s: %q is not a valid interface name (1-%d characters, no '/' or spaces)", field, n, maxIfName)
	}
	return nil
}

func inSubnet(field, addr string, p netip.Prefix) error {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("%s: %v", field, err)
	}
	if !p.Masked().Contains(a) {
		return fmt.Errorf("%s: %s is not in %s", field, a, p.Masked())
	}
	return nil
}

// localAddrFor finds the router's own address on the neighbour's subnet:
// that is the BGP session's source.
func localAddrFor(r Router, nb netip.Addr) (netip.Addr, bool) {
	for _, in := range r.Interfaces {
		p, _ := netip.ParsePrefix(in.Address)
		if p.Masked().Contains(nb) {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// NodeAddrs returns the nodes' addresses in declaration order.
func (s *Spec) NodeAddrs() []string {
	var out []string
	for _, n := range s.Nodes {
		p, _ := netip.ParsePrefix(n.Address)
		out = append(out, p.Addr().String())
	}
	return out
}
