package topology

import (
	"os"
	"strings"
	"testing"
)

func reference(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/labs/gns3-reference.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReferenceLabMatchesTheBlog(t *testing.T) {
	s, err := Parse(reference(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.NodeAddrs(), ","); got != "172.31.3.11,172.31.3.12,172.31.4.11,172.31.4.12" {
		t.Errorf("nodes: %s", got)
	}
	asn := map[string]uint32{}
	for _, r := range s.Routers {
		asn[r.Name] = r.ASN
	}
	if asn["spine"] != 65000 || asn["leaf1"] != 65001 || asn["leaf2"] != 65002 {
		t.Errorf("ASNs: %v", asn)
	}
	if s.Workstation.Address != "172.31.0.1/24" || s.Login.RootPassword != "gns3" {
		t.Errorf("workstation/login: %+v %+v", s.Workstation, s.Login)
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name, old, new, wantErr string
	}{
		{"bad kind", "kind: Lab", "kind: Cluster", "want apiVersion"},
		{"unknown field", "name: gns3", "name: gns3\ncolor: red", "unknown field"},
		{"duplicate node address", "172.31.3.12/24", "172.31.3.11/24", "already used by"},
		{"node outside its bridge subnet", "{name: kube-node4, address: 172.31.4.12/24, gateway: 172.31.4.1", "{name: kube-node4, address: 172.31.5.12/24, gateway: 172.31.5.1", "is not in leaf2/br0's subnet"},
		{"gateway off-subnet", "address: 172.31.3.12/24, gateway: 172.31.3.1", "address: 172.31.3.12/24, gateway: 172.31.9.1", "gateway: 172.31.9.1 is not in 172.31.3.0/24"},
		{"node on a routed port", "connect: leaf2/br0}\n  - {name: kube-node4", "connect: leaf2/eth0}\n  - {name: kube-node4", "is not a bridge"},
		{"dangling interface", "connect: spine/eth2}", "}", "router spine interface eth2: not connected"},
		{"link declared on both sides", "{name: eth1, address: 172.31.1.1/24}", "{name: eth1, address: 172.31.1.1/24, connect: leaf1/eth0}", "already wired"},
		{"link across subnets", "{name: eth0, address: 172.31.2.2/24, connect: spine/eth2}", "{name: eth0, address: 172.31.7.2/24, connect: spine/eth2}", "different subnets"},
		{"bgp neighbour not adjacent", "neighbor: 172.31.2.1, asn: 65000", "neighbor: 172.31.9.1, asn: 65000", "is not on any of leaf2's subnets"},
		{"missing asn", "asn: 65002\n", "asn: 0\n", "asn: missing"},
		{"interface name too long", "{name: eth1, address: 172.31.1.1/24}", "{name: eth1-to-leaf-number-1, address: 172.31.1.1/24}", "not a valid interface name"},
		{"duplicate member", "name: leaf2\n", "name: leaf1\n", `"leaf1" is used twice`},
		{"nice out of range", "connect: leaf2/br0}\nlogin:", "connect: leaf2/br0, nice: 20}\nlogin:", "(kube-node4).nice: 20 is outside 0-19"},
		{"negative cpus", "connect: leaf2/br0}\nlogin:", "connect: leaf2/br0, cpus: -1}\nlogin:", "(kube-node4).cpus: -1 is outside 1-256"},
		{"negative memory", "connect: leaf2/br0}\nlogin:", "connect: leaf2/br0, memoryMB: -5}\nlogin:", "(kube-node4).memoryMB: -5 is negative"},
		{"sudo password without password", "{name: labuser, password: labuser, sudo: password}", "{name: labuser, sudo: password}", "needs a password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := string(reference(t))
			if !strings.Contains(src, tt.old) {
				t.Fatalf("fixture lacks %q", tt.old)
			}
			_, err := Parse([]byte(strings.Replace(src, tt.old, tt.new, 1)))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestBirdConfig(t *testing.T) {
	s, err := Parse(reference(t))
	if err != nil {
		t.Fatal(err)
	}
	conf, err := BirdConfig(s.Routers[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"router id 172.31.0.2;",
		"protocol bgp leaf1 {\n\tlocal 172.31.1.1 as 65000;\n\tneighbor 172.31.1.2 as 65001;",
		"protocol bgp leaf2 {\n\tlocal 172.31.2.1 as 65000;\n\tneighbor 172.31.2.2 as 65002;",
		"export where source = RTS_BGP;",
		"connect delay time 1;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("spine config lacks %q:\n%s", want, conf)
		}
	}
}

func TestRenderEtcKeepsHostAccountsAndAddsLabUsers(t *testing.T) {
	login := Login{RootPassword: "gns3", Users: []User{{Name: "labadmin", Sudo: "nopasswd"}, {Name: "labuser", Password: "x", Sudo: "password"}}}
	f := renderEtc("root:x:0:0:root:/root:/bin/bash\nsshd:x:103:65534::/run/sshd:/usr/sbin/nologin\nlabuser:x:5:5::/:/bin/sh\n",
		"root:*:19000:0:99999:7:::\nsshd:!:19000::::::\n",
		"root:x:0:\n", "kube-node1", "/run/k8slab/x/home", login,
		map[string]string{"root": "$6$r$hash", "labuser": "$6$u$hash"})
	for _, want := range []string{"root:x:0:0:root:/run/k8slab/x/home/root:/bin/bash", "sshd:x:103", "labadmin:x:42100:42100:", "labuser:x:42101:42101:k8slab lab user:/run/k8slab/x/home/labuser:/bin/sh"} {
		if !strings.Contains(f.Passwd, want) {
			t.Errorf("passwd lacks %q:\n%s", want, f.Passwd)
		}
	}
	if strings.Count(f.Passwd, "\nlabuser:x:") != 1 {
		t.Errorf("a stale host entry of a lab user must be replaced:\n%s", f.Passwd)
	}
	for _, want := range []string{"root:$6$r$hash:19000", "labadmin:*:", "labuser:$6$u$hash:"} {
		if !strings.Contains(f.Shadow, want) {
			t.Errorf("shadow lacks %q:\n%s", want, f.Shadow)
		}
	}
	if !strings.Contains(f.Sudoers, "labadmin ALL=(ALL:ALL) NOPASSWD: ALL") || !strings.Contains(f.Sudoers, "labuser ALL=(ALL:ALL) ALL\n") {
		t.Errorf("sudoers:\n%s", f.Sudoers)
	}
	if f.Hostname != "kube-node1\n" || !strings.Contains(f.Hosts, "kube-node1") {
		t.Errorf("hostname/hosts: %q %q", f.Hostname, f.Hosts)
	}
}
