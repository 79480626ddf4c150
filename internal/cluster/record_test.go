package cluster

import (
	"slices"
	"strings"
	"testing"
)

func TestRecordRoundTripAndDiff(t *testing.T) {
	base := func() *Config {
		c := &Config{Nodes: []string{"172.31.3.11", "172.31.3.12", "172.31.4.11", "172.31.4.12"},
			ServiceCIDR: "172.31.64.0/18", PodCIDR: "172.31.128.0/18", Artifacts: "/home/me/bundle"}
		c.Default()
		return c
	}
	b, err := base().Record()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "artifacts") {
		t.Errorf("record holds the workstation's artifacts path:\n%s", b)
	}
	rec, err := Parse(b)
	if err != nil {
		t.Fatalf("the record does not parse as a cluster file: %v\n%s", err, b)
	}
	cases := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"same settings", func(*Config) {}, nil},
		{"another bundle path is not a change", func(c *Config) { c.Artifacts = "/elsewhere" }, nil},
		{"pod CIDR", func(c *Config) { c.PodCIDR = "10.244.0.0/16" }, []string{"podCIDR: 172.31.128.0/18 → 10.244.0.0/16"}},
		{"workers and encapsulation", func(c *Config) {
			c.Workers = c.Workers[1:]
			c.Calico.Encapsulation = "VXLAN"
		}, []string{"calico.encapsulation: IPIP → VXLAN", "workers: 172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12 → 172.31.3.12,172.31.4.11,172.31.4.12"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := base()
			c.change(now)
			if got := now.Diff(rec); !slices.Equal(got, c.want) {
				t.Errorf("Diff = %q, want %q", got, c.want)
			}
		})
	}
}
