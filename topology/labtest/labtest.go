// Package labtest brings up a private copy of the reference lab for one
// test (or one test package) and proves on teardown that nothing leaked
// into the root network namespace.
package labtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8slab/k8slab"
	"github.com/k8slab/k8slab/topology"
)

// Require skips when the lab cannot run here (not root, tools missing),
// unless K8SLAB_REQUIRE_LAB is set: then it fails, so CI never passes by
// silently skipping the real tests.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"ip", "bird", "birdc", "/usr/sbin/sshd", "unshare", "openssl", "sudo"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "namespace lab needs " + strings.Join(missing, ", ") + " (scripts/install-test-deps.sh installs the tools)"
	if os.Getenv("K8SLAB_REQUIRE_LAB") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

var seq atomic.Int32

// Snapshot is the root namespace's links and routes, and the
// workstation's kernel settings (outside any network namespace).
type Snapshot struct{ Links, Routes, Sysctls string }

// RootSnapshot records what the root namespace looks like now.
func RootSnapshot(t testing.TB) Snapshot {
	t.Helper()
	run := func(args ...string) string {
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			t.Fatalf("ip %v: %v", args, err)
		}
		return string(out)
	}
	// Link statistics change by themselves; compare the lines that name links.
	var links []string
	for _, l := range strings.Split(run("-o", "link", "show"), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			links = append(links, f[1])
		}
	}
	return Snapshot{Links: strings.Join(links, " "), Routes: run("route", "show", "table", "all"), Sysctls: topology.KernelSettings()}
}

// Up builds a uniquely named copy of the reference lab and tears it down
// when the test ends, failing the test if anything was left behind.
func Up(t testing.TB) *topology.Lab {
	t.Helper()
	Require(t)
	return upSpec(t, k8slab.ReferenceLab, nil, nil, "")
}

// UpContainers builds the reference lab with systemd containers as nodes
// (K8SLAB_CONTAINER_DIR, default ~/.cache/k8slab/container, holds the
// rootfs make container-rootfs builds). Its name is the e2e lab's.
func UpContainers(t testing.TB, configure ...func(*topology.Lab)) *topology.Lab {
	t.Helper()
	Require(t)
	dir := ContainerDir()
	ctr := &topology.ContainerOptions{RootfsDir: dir + "/rootfs", NodesDir: dir + "/nodes"}
	if err := ctr.CheckRootfs(); err != nil {
		t.Fatal(err) // the make target builds the rootfs first: missing is a failure
	}
	return upSpec(t, k8slab.ReferenceLab, nil, ctr, LabName(), configure...)
}

// UpContainersFile is UpContainers for another lab description (its own
// name: it may run beside the reference lab's).
func UpContainersFile(t testing.TB, labFile []byte) *topology.Lab {
	t.Helper()
	Require(t)
	dir := ContainerDir()
	ctr := &topology.ContainerOptions{RootfsDir: dir + "/rootfs", NodesDir: dir + "/nodes"}
	if err := ctr.CheckRootfs(); err != nil {
		t.Fatal(err)
	}
	spec, err := topology.Parse(labFile)
	if err != nil {
		t.Fatal(err)
	}
	return upSpec(t, labFile, nil, ctr, spec.Name)
}

// ContainerDir holds the container nodes' rootfs and their layers.
func ContainerDir() string {
	if dir := os.Getenv("K8SLAB_CONTAINER_DIR"); dir != "" {
		return dir
	}
	home, _ := os.UserHomeDir()
	return home + "/.cache/k8slab/container"
}

// UpVMs builds the reference lab with QEMU VMs as nodes. The lab keeps the
// reference name "e2e" so node disks and their snapshots are reused from
// one e2e run to the next (K8SLAB_VM_DIR, default ~/.cache/k8slab/vm).
// configure changes the lab before it comes up (KeepNodes, for one).
func UpVMs(t testing.TB, fresh bool, configure ...func(*topology.Lab)) *topology.Lab {
	t.Helper()
	return upVMs(t, &topology.VMOptions{Fresh: fresh}, configure...)
}

// KeepNodes leaves only the named nodes in the lab: fewer emulated VMs
// on the workstation's two cores.
func KeepNodes(names ...string) func(*topology.Lab) {
	return func(l *topology.Lab) {
		l.Spec.Nodes = slices.DeleteFunc(l.Spec.Nodes, func(n topology.Node) bool { return !slices.Contains(names, n.Name) })
	}
}

// ResumeVMs is UpVMs from a snapshot a test saved with Lab.SaveSnapshot.
func ResumeVMs(t testing.TB, snapshot string) *topology.Lab {
	t.Helper()
	return upVMs(t, &topology.VMOptions{Resume: snapshot})
}

func upVMs(t testing.TB, vm *topology.VMOptions, configure ...func(*topology.Lab)) *topology.Lab {
	t.Helper()
	Require(t)
	vm.ImageDir = VMDir()
	vm.DiskDir = vm.ImageDir + "/nodes"
	if err := vm.CheckImage(); err != nil {
		t.Fatal(err) // make e2e builds the image first: missing is a failure
	}
	lab := upSpec(t, k8slab.ReferenceLab, vm, nil, LabName(), configure...)
	// In NTP's place: a test runs for up to an hour, and emulated nodes
	// under load drift apart by seconds (preflight allows 2).
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := lab.KeepClocks(ctx, time.Minute, func(err error) { t.Logf("syncing the nodes' clocks: %v", err) })
		if err != nil {
			t.Logf("keeping the nodes' clocks: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return lab
}

// VMDir holds the VM image and the nodes' disks.
func VMDir() string {
	if dir := os.Getenv("K8SLAB_VM_DIR"); dir != "" {
		return dir
	}
	home, _ := os.UserHomeDir()
	return home + "/.cache/k8slab/vm"
}

// LabName is the VM lab's name: two e2e runs on one machine need two.
func LabName() string {
	if name := os.Getenv("K8SLAB_E2E_LAB"); name != "" {
		return name
	}
	return "e2e"
}

func upSpec(t testing.TB, labFile []byte, vm *topology.VMOptions, ctr *topology.ContainerOptions, name string, configure ...func(*topology.Lab)) *topology.Lab {
	t.Helper()
	spec, err := topology.Parse(labFile)
	if err != nil {
		t.Fatal(err)
	}
	// Short and unique per process and call: namespaces of parallel test
	// packages never collide, and a crashed run's leftovers are found by name.
	spec.Name = name
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("t%d-%d", os.Getpid()%100000, seq.Add(1))
	}
	lab := topology.New(spec, "")
	lab.Logf = t.Logf
	lab.VM = vm
	lab.Container = ctr
	for _, f := range configure {
		f(lab)
	}
	timeout := 60 * time.Second
	if ctr != nil {
		timeout = 3 * time.Minute
		lab.Down(context.Background())
	}
	if vm != nil {
		timeout = 15 * time.Minute
		// A crashed earlier e2e run may have left this lab behind.
		lab.Down(context.Background())
	}
	before := RootSnapshot(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := lab.Down(ctx); err != nil {
			t.Errorf("lab down: %v", err)
		}
		after := RootSnapshot(t)
		if after != before {
			t.Errorf("root namespace changed by the lab:\nbefore: %+v\nafter:  %+v", before, after)
		}
		out, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(out), "k8slab-"+spec.Name+"-") {
			t.Errorf("namespaces left behind:\n%s", out)
		}
		if _, err := os.Stat(lab.Dir); !os.IsNotExist(err) {
			t.Errorf("state dir %s left behind", lab.Dir)
		}
		if ctr != nil {
			for _, left := range topology.ContainerLeftovers(ctr, spec.Name) {
				t.Errorf("container nodes left behind: %s", left)
			}
		}
	})
	if err := lab.Up(ctx); err != nil {
		t.Fatal(err)
	}
	return lab
}
