package cluster

import (
	"net/netip"
	"strings"
	"testing"
)

// reference is the user's kubespray lab.
func reference() *Config {
	c := &Config{
		Nodes:       []string{"172.31.3.11", "172.31.3.12", "172.31.4.11", "172.31.4.12"},
		ServiceCIDR: "172.31.64.0/18",
		PodCIDR:     "172.31.128.0/18",
	}
	c.Default()
	return c
}

func TestDefaultsReproduceTheKubesprayInventory(t *testing.T) {
	c := reference()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.ControlPlane != "172.31.3.11" || strings.Join(c.Etcd, ",") != "172.31.3.11,172.31.3.12,172.31.4.11" ||
		len(c.Workers) != 4 || c.StackedEtcd() {
		t.Errorf("roles: cp %s etcd %v workers %v", c.ControlPlane, c.Etcd, c.Workers)
	}
	if c.Calico.Encapsulation != "IPIP" || c.Calico.Autodetect != "kubernetes-internal-ip" || c.KubernetesVersion != "v1.37.2" {
		t.Errorf("defaults: %+v", c)
	}
	two := &Config{Nodes: []string{"10.0.0.1", "10.0.0.2"}}
	two.Default()
	if !two.StackedEtcd() || two.Etcd[0] != "10.0.0.1" {
		t.Errorf("two nodes: etcd %v, want stacked on the control plane", two.Etcd)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{"bad address", func(c *Config) { c.Nodes[1] = "172.31.3.312" }, []string{`nodes: node "172.31.3.312": invalid IPv4 address`}},
		{"duplicate node", func(c *Config) { c.Nodes[3] = "172.31.3.11" }, []string{`nodes: "172.31.3.11" is listed twice`}},
		{"even etcd", func(c *Config) { c.Etcd = c.Nodes }, []string{"etcd: 4 members", "odd number"}},
		{"etcd outside nodes", func(c *Config) { c.Etcd = []string{"172.31.3.11", "172.31.3.12", "172.31.9.9"} }, []string{`etcd: "172.31.9.9" is not one of --nodes`}},
		{"control plane outside nodes", func(c *Config) { c.ControlPlane = "172.31.9.9" }, []string{`control-plane: "172.31.9.9" is not one of --nodes`}},
		{"cidrs overlap", func(c *Config) { c.PodCIDR = "172.31.96.0/19" }, []string{"service-cidr 172.31.64.0/18 and pod-cidr 172.31.96.0/19 overlap"}},
		{"cidr contains a node", func(c *Config) { c.ServiceCIDR = "172.31.0.0/20" }, []string{"service-cidr 172.31.0.0/20 contains node address 172.31.3.11"}},
		{"cidr not a network address", func(c *Config) { c.PodCIDR = "172.31.128.7/18" }, []string{`pod-cidr: "172.31.128.7/18" is not an IPv4 network address`, "did you mean 172.31.128.0/18?"}},
		{"unknown kube-proxy mode", func(c *Config) { c.KubeProxyMode = "ipvs" }, []string{`kube-proxy-mode: "ipvs" is not iptables or nftables`}},
		{"host bits set in a wide prefix", func(c *Config) { c.PodCIDR = "172.31.64.0/8" }, []string{"host bits are set, did you mean 172.0.0.0/8?"}},
		{"pod cidr too small for the nodes", func(c *Config) { c.PodCIDR = "172.31.128.0/25" }, []string{"pod-cidr: 172.31.128.0/25 holds 2 blocks of /26, fewer than the 4 nodes"}},
		{"unknown kubernetes", func(c *Config) { c.KubernetesVersion = "v1.20.0" }, []string{"kubernetes-version: kubernetes version v1.20.0 is not supported"}},
		{"unknown calico", func(c *Config) { c.Calico.Version = "v3.0.0" }, []string{"calico-version: v3.0.0 is not supported"}},
		{"bad encapsulation", func(c *Config) { c.Calico.Encapsulation = "GRE" }, []string{`calico-encapsulation: "GRE"`}},
		{"several at once", func(c *Config) { c.ControlPlane = "10.9.9.9"; c.PodCIDR = "nope" }, []string{"control-plane:", "pod-cidr:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := reference()
			tt.change(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestCheckNetworksAgainstNodeSubnets(t *testing.T) {
	c := reference()
	c.PodCIDR = "10.0.0.0/16"
	subnets := map[string][]netip.Prefix{"172.31.3.12": {netip.MustParsePrefix("10.0.8.0/24")}}
	err := c.CheckNetworks(subnets)
	if err == nil || !strings.Contains(err.Error(), "pod-cidr 10.0.0.0/16 overlaps node 172.31.3.12's network 10.0.8.0/24") {
		t.Fatalf("got %v", err)
	}
	if err := reference().CheckNetworks(map[string][]netip.Prefix{"172.31.3.11": {netip.MustParsePrefix("172.31.3.0/24")}}); err != nil {
		t.Errorf("reference lab: %v", err)
	}
}

func TestParseStrict(t *testing.T) {
	_, err := Parse([]byte("apiVersion: k8slab.dev/v1alpha1\nkind: Cluster\nnodes: [a]\npodSubnet: 10.0.0.0/16\n"))
	if err == nil || !strings.Contains(err.Error(), "podSubnet") {
		t.Errorf("misspelt field: %v", err)
	}
	c, err := Parse([]byte("apiVersion: k8slab.dev/v1alpha1\nkind: Cluster\nnodes: [172.31.3.11]\ncalico: {encapsulation: VXLAN}\n"))
	if err != nil || c.Calico.Encapsulation != "VXLAN" {
		t.Errorf("%+v %v", c, err)
	}
}

func TestAddress(t *testing.T) {
	for in, want := range map[string]string{"172.31.3.11": "172.31.3.11", "admin@172.31.3.11:2222": "172.31.3.11",
		"kube-node1": "kube-node1", "root@[fd00::11]:22": "fd00::11"} {
		if got := Address(in); got != want {
			t.Errorf("Address(%q) = %q, want %q", in, got, want)
		}
	}
}
