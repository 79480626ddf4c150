package provision

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	nodescript "github.com/k8slab/k8slab/scripts/node"
)

// TestKernelScript runs kernel.sh with a real shell (bash and dash) on
// a stand-in root: /proc/swaps, /proc/filesystems, /proc/sys and /etc
// under a temporary directory, swapoff and modprobe replaced by stubs that
// log their calls. A converged node prints changed=0 and calls nothing; a
// kernel with overlay and bridge netfilter built in (no /sys/module entry,
// nothing to load) is converged too.
func TestKernelScript(t *testing.T) {
	const noSwap = "Filename\tType\tSize\tUsed\tPriority\n"
	tests := []struct {
		name      string
		swaps     string
		sysctl    string // value of every bridge/forward setting
		persisted bool   // modules-load.d and sysctl.d files already right
		// modules: overlay and bridge netfilter are in the kernel
		// (loaded or built in), so /proc shows what they provide.
		modules     bool
		wantChanged string
		wantCalls   string
	}{
		{"converged", noSwap, "1", true, true, "changed=0", ""},
		{"swap on", noSwap + "/swapfile file 1024 0 -2\n", "1", true, true, "changed=1", "swapoff -a"},
		{"forwarding off", noSwap, "0", true, true, "changed=1", ""},
		{"settings not persisted", noSwap, "1", false, true, "changed=1", ""},
		{"modules not loaded", noSwap, "1", true, false, "changed=1", "modprobe overlay\nmodprobe br_netfilter"},
	}
	for _, sh := range []string{"bash", "dash"} {
		if _, err := exec.LookPath(sh); err != nil {
			t.Fatalf("%s: %v (scripts run under the node's login shell or sh)", sh, err)
		}
		for _, tt := range tests {
			t.Run(sh+"/"+tt.name, func(t *testing.T) {
				root := t.TempDir()
				put := func(p, content string) {
					p = filepath.Join(root, p)
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				put("proc/swaps", tt.swaps)
				put("proc/filesystems", "nodev\tsysfs\nnodev\tproc\n")
				keys := []string{"net/ipv4/ip_forward"}
				if tt.modules {
					put("proc/filesystems", "nodev\tsysfs\nnodev\tproc\nnodev\toverlay\n")
					keys = append(keys, "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables")
				} else {
					// The stub modprobe makes what the real module would.
					put("bin/modprobe-effect", "#!/bin/sh\n[ \"$1\" = br_netfilter ] || exit 0\nmkdir -p "+root+"/proc/sys/net/bridge\nfor k in bridge-nf-call-iptables bridge-nf-call-ip6tables; do echo 0 > "+root+"/proc/sys/net/bridge/$k; done\n")
				}
				for _, k := range keys {
					put("proc/sys/"+k, tt.sysctl+"\n")
				}
				put("etc/fstab", "/dev/vda / ext4 defaults 0 1\n")
				if tt.persisted {
					put("etc/modules-load.d/k8slab.conf", "overlay\nbr_netfilter\n")
					put("etc/sysctl.d/99-k8slab.conf", "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n")
				}
				calls := filepath.Join(root, "calls")
				for _, stub := range []string{"swapoff", "modprobe"} {
					put("bin/"+stub, "#!/bin/sh\necho \""+stub+" $*\" >> "+calls+"\n[ ! -x "+root+"/bin/"+stub+"-effect ] || "+root+"/bin/"+stub+"-effect \"$@\"\n")
				}
				cmd := exec.Command(sh, "-c", nodescript.Command("kernel.sh", root))
				cmd.Env = append(os.Environ(), "PATH="+filepath.Join(root, "bin")+":"+os.Getenv("PATH"))
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				if got := strings.TrimSpace(string(out)); got != tt.wantChanged {
					t.Errorf("output %q, want %q", got, tt.wantChanged)
				}
				c, _ := os.ReadFile(calls)
				if got := strings.TrimSpace(string(c)); got != tt.wantCalls {
					t.Errorf("calls %q, want %q", got, tt.wantCalls)
				}
				for _, k := range []string{"net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"} {
					if b, _ := os.ReadFile(filepath.Join(root, "proc/sys", k)); strings.TrimSpace(string(b)) != "1" {
						t.Errorf("%s = %q after the script", k, b)
					}
				}
			})
		}
	}
}
