package kubespray

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/k8slab/k8slab/internal/cluster"
)

// reference is the cluster the blog's kubespray inventory describes.
func checkReference(t *testing.T, c *cluster.Config, user string) {
	t.Helper()
	c.Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	n := func(a string) string { return user + a }
	want := map[string]string{
		"nodes":        strings.Join([]string{n("172.31.3.11"), n("172.31.3.12"), n("172.31.4.11"), n("172.31.4.12")}, ","),
		"controlPlane": n("172.31.3.11"),
		"etcd":         strings.Join([]string{n("172.31.3.11"), n("172.31.3.12"), n("172.31.4.11")}, ","),
		"workers":      strings.Join([]string{n("172.31.3.11"), n("172.31.3.12"), n("172.31.4.11"), n("172.31.4.12")}, ","),
		"serviceCIDR":  "172.31.64.0/18",
		"podCIDR":      "172.31.128.0/18",
	}
	got := map[string]string{
		"nodes": strings.Join(c.Nodes, ","), "controlPlane": c.ControlPlane, "etcd": strings.Join(c.Etcd, ","),
		"workers": strings.Join(c.Workers, ","), "serviceCIDR": c.ServiceCIDR, "podCIDR": c.PodCIDR,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %q, want %q", k, got[k], w)
		}
	}
}

// TestSeedInventory: the blog's inventory.cfg and group_vars, verbatim,
// give the reference cluster; vault and the empty calico-rr are listed as
// ignored with why.
func TestSeedInventory(t *testing.T) {
	r, err := Load("../../testdata/kubespray/seed/inventory.cfg")
	if err != nil {
		t.Fatal(err)
	}
	checkReference(t, r.Config, "")
	if r.Config.Calico.Encapsulation != "IPIP" || r.Config.Calico.BGP != cluster.BGPMesh {
		t.Errorf("calico: %+v (kubespray's default is IPIP with the mesh)", r.Config.Calico)
	}
	ignored := strings.Join(r.Ignored, "\n")
	for _, want := range []string{
		"inventory.cfg:27: [vault]: k8slab generates its own PKI",
		"inventory.cfg:25: [calico_rr]: empty",
	} {
		if !strings.Contains(ignored, want) {
			t.Errorf("ignored list lacks %q:\n%s", want, ignored)
		}
	}
	if len(r.Ignored) != 2 {
		t.Errorf("ignored: %v", r.Ignored)
	}
}

// TestSampleInventory: the current YAML shape with new group names and
// group_vars directories.
func TestSampleInventory(t *testing.T) {
	r, err := Load("../../testdata/kubespray/sample/hosts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checkReference(t, r.Config, "root@")
	c := r.Config
	if c.KubernetesVersion != "v1.37.2" || c.KubeProxyMode != "nftables" || c.Calico.Encapsulation != "VXLAN" || c.Calico.BlockSize != 26 {
		t.Errorf("settings: %+v", c)
	}
	ignored := strings.Join(r.Ignored, "\n")
	for _, want := range []string{
		"all.yml:3: bin_dir: not a setting k8slab has",
		"all.yml:7: loadbalancer_apiserver_port: not a setting k8slab has",
	} {
		if !strings.Contains(ignored, want) {
			t.Errorf("ignored list lacks %q:\n%s", want, ignored)
		}
	}
}

// write lays out an inventory in a temporary directory: name -> content.
func write(t *testing.T, files map[string]string) string {
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const okINI = `[all]
n1 ansible_host=10.0.0.1
n2 ansible_host=10.0.0.2
[kube_control_plane]
n1
[kube_node]
n1
n2
[etcd]
n1
[k8s_cluster:children]
kube_control_plane
kube_node
`

func TestMalformedInventoriesAreRefusedWithFileAndLine(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"unknown group reference", map[string]string{"inventory.cfg": okINI + "[k8s_cluster:children]\nkube_masters\n"},
			"inventory.cfg:11: group k8s_cluster: child group kube_masters is defined nowhere"},
		{"host in no group", map[string]string{"inventory.cfg": strings.Replace(okINI, "n2 ansible_host=10.0.0.2\n", "n2 ansible_host=10.0.0.2\nn3 ansible_host=10.0.0.3\n", 1)},
			"inventory.cfg:4: host n3 is in no group of the cluster"},
		{"duplicate host", map[string]string{"inventory.cfg": strings.Replace(okINI, "[kube_node]\nn1\n", "[kube_node]\nn1\nn1\n", 1)},
			"inventory.cfg:8: host n1 is listed twice in [kube_node] (first on line 7)"},
		{"two hosts, one address", map[string]string{"inventory.cfg": strings.Replace(okINI, "10.0.0.2", "10.0.0.1", 1)},
			"inventory.cfg:3: hosts n1 and n2 are both 10.0.0.1"},
		{"bad CIDR in group_vars", map[string]string{"inventory.cfg": okINI, "group_vars/k8s_cluster/k8s-cluster.yml": "kube_network_plugin: calico\nkube_pods_subnet: 10.233.64.0/33\n"},
			"k8s-cluster.yml:2: kube_pods_subnet: \"10.233.64.0/33\" is not an IPv4 network address with prefix"},
		{"flannel", map[string]string{"inventory.cfg": okINI, "group_vars/k8s-cluster.yml": "kube_network_plugin: flannel\n"},
			"k8s-cluster.yml:1: kube_network_plugin: flannel: k8slab installs Calico only"},
		{"network policy off", map[string]string{"inventory.cfg": okINI, "group_vars/all.yml": "enable_network_policy: false\n"},
			"all.yml:1: enable_network_policy: false: Calico always enforces NetworkPolicy"},
		{"two control planes", map[string]string{"inventory.cfg": strings.Replace(okINI, "[kube_control_plane]\nn1\n", "[kube_control_plane]\nn1\nn2\n", 1)},
			"inventory.cfg:4: 2 hosts in kube_control_plane (n1, n2): k8slab installs one control plane"},
		{"route reflectors", map[string]string{"inventory.cfg": okINI + "[calico_rr]\nn2\n"},
			"inventory.cfg:14: group calico_rr has hosts"},
		{"ip differs from the SSH address", map[string]string{"inventory.cfg": strings.Replace(okINI, "n2 ansible_host=10.0.0.2", "n2 ansible_host=10.0.0.2 ip=192.168.0.2", 1)},
			"inventory.cfg:3: host n2: ip=192.168.0.2 differs from its SSH address 10.0.0.2"},
		{"ipvs", map[string]string{"inventory.cfg": okINI, "group_vars/k8s_cluster.yml": "kube_proxy_mode: ipvs\n"},
			"k8s_cluster.yml:1: kube_proxy_mode: ipvs"},
		{"another DNS domain", map[string]string{"inventory.cfg": okINI, "group_vars/k8s_cluster.yml": "cluster_name: lab.example\n"},
			"k8s_cluster.yml:1: cluster_name: lab.example: k8slab's clusters use the DNS domain cluster.local"},
		{"YAML: duplicate host", map[string]string{"hosts.yaml": "all:\n  hosts:\n    n1: {ansible_host: 10.0.0.1}\n  children:\n    kube_control_plane:\n      hosts:\n        n1:\n        n1:\n    kube_node:\n      hosts: {n1: }\n    etcd:\n      hosts: {n1: }\n"},
			"hosts.yaml:8: host n1 is listed twice in kube_control_plane (first on line 7)"},
		{"YAML: unknown key in a group", map[string]string{"hosts.yaml": "all:\n  host:\n    n1: {}\n"},
			`hosts.yaml:2: group all: "host" is not hosts, children or vars`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := write(t, tt.files)
			inv := "inventory.cfg"
			if _, ok := tt.files["hosts.yaml"]; ok {
				inv = "hosts.yaml"
			}
			_, err := Load(filepath.Join(dir, inv))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v\nwant %q", err, tt.want)
			}
		})
	}
}

// TestConnectionSettings: group-level ansible_user/port/key apply to the
// hosts that set none; the become password is taken, never listed.
func TestConnectionSettings(t *testing.T) {
	ini := strings.Replace(okINI, "n2 ansible_host=10.0.0.2", "n2 ansible_host=10.0.0.2 ansible_user=admin ansible_port=2222 ansible_become=true", 1) +
		"[all:vars]\nansible_user=labuser\nansible_ssh_private_key_file=~/.ssh/lab\nansible_become_password=s3cret\n"
	r, err := Load(filepath.Join(write(t, map[string]string{"inventory.cfg": ini}), "inventory.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Config.Nodes, ","); got != "labuser@10.0.0.1,admin@10.0.0.2:2222" {
		t.Errorf("nodes %s", got)
	}
	if r.Password != "s3cret" || strings.Join(r.KeyFiles, ",") != "~/.ssh/lab" {
		t.Errorf("password %q keys %v", r.Password, r.KeyFiles)
	}
	if strings.Contains(strings.Join(r.Ignored, "\n"), "s3cret") {
		t.Errorf("the password shows in the ignored list: %v", r.Ignored)
	}
}

// TestPeerWithRouter: kubespray's calico_peer_with_router with one peer
// per host becomes the as-per-rack mode, one rack per router.
func TestPeerWithRouter(t *testing.T) {
	files := map[string]string{
		"inventory.cfg":              okINI,
		"group_vars/k8s_cluster.yml": "calico_peer_with_router: true\n",
		"host_vars/n1.yml":           "local_as: 65001\npeers:\n  - router_id: 10.0.0.254\n    as: 65001\n",
		"host_vars/n2.yml":           "local_as: 65001\npeers:\n  - router_id: 10.0.0.254\n    as: 65001\n",
	}
	r, err := Load(filepath.Join(write(t, files), "inventory.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	c := r.Config
	if c.Calico.BGP != cluster.BGPAsPerRack || len(c.Calico.Racks) != 1 || c.Calico.Racks[0] != (cluster.Rack{Name: "rack-10-0-0-254", Router: "10.0.0.254", ASN: 65001}) {
		t.Errorf("calico %+v", c.Calico)
	}
	files["host_vars/n2.yml"] = "local_as: 65002\npeers:\n  - router_id: 10.0.0.254\n    as: 65001\n"
	if _, err := Load(filepath.Join(write(t, files), "inventory.cfg")); err == nil || !strings.Contains(err.Error(), "n2.yml:1: host n2: local_as 65002 differs from its router's AS 65001") {
		t.Errorf("a node in another AS than its router: %v", err)
	}
}
