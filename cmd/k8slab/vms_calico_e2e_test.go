package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/topology/labtest"
)

// TestE2EVMsInventoryIPIP installs the blog's kubespray inventory, as it
// is, on the four emulated VMs from the bundle with Calico's images and
// waits for a working network (the default): Calico's IPIP in CrossSubnet
// mode, which container nodes cannot run (the workstation's kernel has no
// ipip module). Then verify with every check PASS and none skipped, the
// routes Calico programmed (same rack over eth0, other rack through
// tunl0), a no-op re-run and a reinstall with its verify. Run by make
// e2e-vm-calico (about an hour under TCG; not in CI).
func TestE2EVMsInventoryIPIP(t *testing.T) {
	if os.Getenv("K8SLAB_E2E_VM_CALICO") == "" {
		t.Skip("VM tier with Calico: run with make e2e-vm-calico (K8SLAB_E2E_VM_CALICO=1)")
	}
	e := newE2E(t, labtest.UpVMs(t, true))
	inventory, _ := filepath.Abs("../../testdata/kubespray/seed/inventory.cfg")
	e.args = []string{"install", "-i", inventory, "--artifacts", os.Getenv("K8SLAB_BUNDLE"), "--kubeconfig-dir", e.kubeconfigDir,
		"--name", "lab", "--output", "json", "--wait-timeout", "45m"}
	install := e.install(t, "vms-inventory-install", e.args)

	if pool := e.kubectl(`get ippools.crd.projectcalico.org default-ipv4-ippool -o jsonpath='{.spec.cidr} {.spec.ipipMode} {.spec.vxlanMode}'`); pool != "172.31.128.0/18 CrossSubnet Never" {
		e.errorf(t, "IPPool: %q, want the inventory's pods subnet with IPIP CrossSubnet", pool)
	}
	verify := func(name string) {
		t.Helper()
		r := runCLI(t, e.lab, e.env, "verify", "--output", "json")
		judgeVerify(t, name, r.code, r.stdout, r.stderr, 17, allPass)
	}
	verify("vms-verify-install")
	checkPodRoutes(t, e, "tunl0")
	// From the kernel's link list: naming tunl0 (ip link show tunl0) loads
	// ipip and so makes the device it looks for (see reset.sh).
	for _, n := range e.lab.Spec.NodeAddrs() {
		if link := e.sh(n, "ip -d -o link show | grep '^[0-9]*: tunl0@' | grep -o 'ipip [a-z]* remote any' || true"); link == "" {
			e.errorf(t, "%s: no IPIP tunl0 device", n)
		}
	}

	e.noOpRerun(t, "vms-rerun", e.args, install)

	start := time.Now()
	r := runCLI(t, e.lab, e.env, "reinstall", "--yes", "--output", "json", "--artifacts", os.Getenv("K8SLAB_BUNDLE"), "--kubeconfig-dir", e.kubeconfigDir)
	reinstall := time.Since(start)
	keepReport(t, "vms-reinstall", r.stdout)
	t.Logf("reinstall: %s (%.0f %% of the install), exit %d\n%s", reinstall.Round(time.Second), 100*reinstall.Seconds()/install.Seconds(), r.code, tail(r.stderr, 30))
	if r.code != 0 {
		t.Fatalf("reinstall exit %d", r.code)
	}
	t.Logf("reinstall phases: %s", phaseSummary(parseReport(t, r.stdout)))
	if reinstall > install/2 {
		e.errorf(t, "reinstall took %s, more than half the install (%s)", reinstall.Round(time.Second), install.Round(time.Second))
	}
	verify("vms-verify-reinstall")
	if s := strings.TrimSpace(e.kubectl(`get nodes --no-headers | grep -vc ' Ready ' || true`)); s != "0" {
		e.errorf(t, "%s nodes not Ready after the reinstall", s)
	}
}
