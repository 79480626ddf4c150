package cluster

import (
	"net/netip"
	"strings"
	"testing"
)

// asPerRack is the reference lab in Calico's AS-per-rack mode.
func asPerRack() *Config {
	c := &Config{
		Nodes:       []string{"172.31.3.11", "172.31.3.12", "172.31.4.11", "172.31.4.12"},
		ServiceCIDR: "172.31.64.0/18",
		PodCIDR:     "172.31.128.0/18",
		Calico: Calico{BGP: BGPAsPerRack, Racks: []Rack{
			{Name: "leaf1", Router: "172.31.3.1", ASN: 65001}, {Name: "leaf2", Router: "172.31.4.1", ASN: 65002}}},
	}
	c.Default()
	return c
}

func TestAsPerRackDefaultsToNoEncapsulation(t *testing.T) {
	c := asPerRack()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Calico.Encapsulation != "None" {
		t.Errorf("encapsulation %s, want None: the fabric routes the pods", c.Calico.Encapsulation)
	}
	if m := reference(); m.Calico.BGP != BGPMesh || m.Calico.Encapsulation != "IPIP" {
		t.Errorf("default mode: %s %s, want mesh with IPIP", m.Calico.BGP, m.Calico.Encapsulation)
	}
}

func TestValidateRacks(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"as-per-rack with VXLAN", func(c *Config) { c.Calico.Encapsulation = "VXLAN" }, "calico-encapsulation: VXLAN with calico bgp as-per-rack"},
		{"as-per-rack without racks", func(c *Config) { c.Calico.Racks = nil }, "calico bgp as-per-rack needs the racks' routers"},
		{"racks in mesh mode", func(c *Config) { c.Calico.BGP = BGPMesh }, "calico racks: only used with calico bgp as-per-rack"},
		{"unknown mode", func(c *Config) { c.Calico.BGP = "full-mesh" }, `calico-bgp: "full-mesh" is not mesh or as-per-rack`},
		{"bad rack name", func(c *Config) { c.Calico.Racks[0].Name = "rack 1" }, `calico racks: name "rack 1"`},
		{"duplicate rack", func(c *Config) { c.Calico.Racks[1].Name = "leaf1" }, `calico racks: "leaf1" is listed twice`},
		{"router not an address", func(c *Config) { c.Calico.Racks[0].Router = "leaf1.lab" }, `calico racks: leaf1: router "leaf1.lab" is not an IPv4 address`},
		{"shared router", func(c *Config) { c.Calico.Racks[1].Router = "172.31.3.1" }, "calico racks: leaf2: router 172.31.3.1 is another rack's too"},
		{"no AS", func(c *Config) { c.Calico.Racks[1].ASN = 0 }, "calico racks: leaf2: asn must be 1-4294967295"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := asPerRack()
			tt.change(c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseRacks(t *testing.T) {
	got, err := ParseRacks([]string{"leaf1=172.31.3.1@65001,leaf2=172.31.4.1@65002", "rack3=10.0.0.1@4200000000"})
	if err != nil || len(got) != 3 || got[1] != (Rack{"leaf2", "172.31.4.1", 65002}) || got[2].ASN != 4200000000 {
		t.Errorf("%+v %v", got, err)
	}
	for _, bad := range []string{"leaf1=172.31.3.1", "leaf1@65001", "leaf1=172.31.3.1@AS65001", "leaf1=172.31.3.1@4294967296"} {
		if _, err := ParseRacks([]string{bad}); err == nil || !strings.Contains(err.Error(), "is not NAME=ROUTER@ASN") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestRackOf(t *testing.T) {
	c := asPerRack()
	r, err := c.RackOf("kube-node3", netip.MustParsePrefix("172.31.4.11/24"))
	if err != nil || r.Name != "leaf2" {
		t.Errorf("kube-node3: %+v %v", r, err)
	}
	_, err = c.RackOf("kube-node5", netip.MustParsePrefix("172.31.5.11/24"))
	if err == nil || !strings.Contains(err.Error(), "kube-node5 (172.31.5.11/24): no rack's router is on its subnet (racks: leaf1 172.31.3.1, leaf2 172.31.4.1)") {
		t.Errorf("kube-node5: %v", err)
	}
	c.Calico.Racks = append(c.Calico.Racks, Rack{Name: "other", Router: "172.31.4.254", ASN: 65003})
	_, err = c.RackOf("kube-node3", netip.MustParsePrefix("172.31.4.11/24"))
	if err == nil || !strings.Contains(err.Error(), "racks leaf2 and other both have their router on its subnet") {
		t.Errorf("two racks: %v", err)
	}
}

// A changed mode is a recorded setting that differs: install refuses it
// without --force, naming the field.
func TestModeChangeShowsInTheDiff(t *testing.T) {
	d := reference().Diff(asPerRack())
	if !strings.Contains(strings.Join(d, "\n"), "calico.bgp: as-per-rack → mesh") {
		t.Errorf("diff %v", d)
	}
}

// A record written before the BGP mode existed holds mesh, its default:
// a re-run of such a cluster is not a changed setting.
func TestRecordWithoutBGPModeIsMesh(t *testing.T) {
	now := reference()
	b, err := now.Record()
	if err != nil {
		t.Fatal(err)
	}
	old := strings.ReplaceAll(string(b), "  bgp: mesh\n", "")
	if old == string(b) {
		t.Fatalf("the record has no bgp line to drop:\n%s", b)
	}
	rec, err := Parse([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	rec.Default()
	if d := now.Diff(rec); len(d) > 0 {
		t.Errorf("an old record differs: %v", d)
	}
}
