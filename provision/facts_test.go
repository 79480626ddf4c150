package provision

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestParseFacts(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    Facts
		wantErr string
	}{
		{
			name: "ubuntu node with kubelet, cgroup v2, swap",
			out: `os_id=ubuntu
os_version=22.04
os_pretty=Ubuntu 22.04.4 LTS
kernel=5.15.0-100-generic
arch=x86_64
hostname=kube-node1
cpus=2
mem_kb=2028000
swap_kb=1048572
default_iface=ens3
default_addr=172.31.3.11/24
cgroup_fs=cgroup2fs
machine_id=abc
product_uuid=
containerd_path=/usr/local/bin/containerd
containerd_version=v2.1.4
kubelet_path=/usr/local/bin/kubelet
kubelet_version=v1.37.2
ipip=yes
sys_resource=yes
`,
			want: Facts{IPIP: true, SysResource: true, Hostname: "kube-node1", OSID: "ubuntu", OSVersion: "22.04", OSPretty: "Ubuntu 22.04.4 LTS",
				Kernel: "5.15.0-100-generic", Arch: "x86_64", CPUs: 2, MemoryMB: 1980, SwapOn: true,
				DefaultIface: "ens3", DefaultAddr: "172.31.3.11/24", CgroupVersion: 2, MachineID: "abc",
				Containerd: Binary{"/usr/local/bin/containerd", "v2.1.4"}, Kubelet: Binary{"/usr/local/bin/kubelet", "v1.37.2"}},
		},
		{
			name: "old cgroup v1 host without route or kube binaries",
			out:  "os_id=debian\nos_version=11\nkernel=5.10.0\narch=aarch64\ncpus=4\nmem_kb=4096000\nswap_kb=0\ncgroup_fs=tmpfs\n",
			want: Facts{OSID: "debian", OSVersion: "11", Kernel: "5.10.0", Arch: "aarch64", CPUs: 4, MemoryMB: 4000, CgroupVersion: 1},
		},
		{name: "not a posix shell", out: "Unknown command\n", wantErr: "unexpected output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFacts(tt.out)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestFactsScriptCapabilities runs the facts script with dash and bash on
// this machine and compares its CAP_SYS_RESOURCE answer with the
// bounding set read here.
func TestFactsScriptCapabilities(t *testing.T) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	var bnd uint64
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			bnd, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	want := "sys_resource=no"
	if bnd>>24&1 == 1 {
		want = "sys_resource=yes"
	}
	for _, sh := range []string{"dash", "bash"} {
		out, err := exec.Command(sh, "-c", FactsScript()).Output()
		if err != nil {
			t.Fatalf("%s: %v", sh, err)
		}
		if !strings.Contains(string(out), "\n"+want+"\n") {
			t.Errorf("%s: facts lack %q:\n%s", sh, want, out)
		}
		f, err := ParseFacts(string(out))
		if err != nil || f.SysResource != (bnd>>24&1 == 1) {
			t.Errorf("%s: parsed SysResource %v (%v)", sh, f.SysResource, err)
		}
	}
}
