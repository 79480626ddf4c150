package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/internal/ssh"
	"github.com/k8slab/k8slab/topology/labtest"
)

type installReport struct {
	run.Report
	Hosts []struct {
		Host  string `json:"host"`
		Steps []run.StepResult
		Data  struct {
			Phases []struct {
				Phase, Status string
				DurationMS    int64 `json:"duration_ms"`
			} `json:"phases"`
		} `json:"data"`
	} `json:"hosts"`
}

// TestE2EInstall installs the user's cluster on the four VMs from the
// offline bundle and checks it the way an operator would; then proves a
// second install is a no-op. Run by make e2e.
func TestE2EInstall(t *testing.T) {
	if os.Getenv("K8SLAB_E2E_INSTALL") == "" {
		t.Skip("install tier: run with make e2e-install (K8SLAB_E2E_INSTALL=1)")
	}
	lab := labtest.UpVMs(t, false)
	env, _ := labEnv(t, lab)
	kubeconfigDir := t.TempDir()
	args := []string{"install", "--service-cidr", "172.31.64.0/18", "--pod-cidr", "172.31.128.0/18",
		"--artifacts", os.Getenv("K8SLAB_BUNDLE"), "--kubeconfig-dir", kubeconfigDir, "--name", "lab", "--output", "json", "--wait=false"}

	start := time.Now()
	r := runCLI(t, lab, env, args...)
	first := time.Since(start)
	t.Logf("first install: %s\n%s", first.Round(time.Second), tail(r.stderr, 40))
	if r.code != 0 {
		t.Fatalf("install exit %d\n%s", r.code, r.stdout)
	}
	var rep installReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, r.stdout)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	o := lab.SSHOptions()
	o.CommandTimeout = 2 * time.Minute
	pool, err := ssh.NewPool(o)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cp, _ := pool.Host(ssh.Target{Host: "172.31.3.11"})
	kubectl := func(args string) string {
		out, err := host.Output(ctx, cp, "kubectl --kubeconfig /etc/kubernetes/admin.conf "+args)
		if err != nil {
			t.Errorf("kubectl %s: %v", args, err)
		}
		return strings.TrimSpace(out)
	}
	nodes := kubectl(`get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.addresses[?(@.type=="InternalIP")].address} {end}'`)
	for _, want := range []string{"kube-node1=172.31.3.11", "kube-node2=172.31.3.12", "kube-node3=172.31.4.11", "kube-node4=172.31.4.12"} {
		if !strings.Contains(nodes, want) {
			t.Errorf("nodes %q lack %s", nodes, want)
		}
	}
	if ip := kubectl(`get svc kubernetes -o jsonpath='{.spec.clusterIP}'`); ip != "172.31.64.1" {
		t.Errorf("kubernetes Service ClusterIP %s, want 172.31.64.1", ip)
	}
	phases := kubectl(`-n kube-system get pods -l tier=control-plane -o jsonpath='{range .items[*]}{.metadata.name}={.status.phase} {end}'`)
	for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if !strings.Contains(phases, c+"-kube-node1=Running") {
			t.Errorf("control plane pods %q: %s not Running", phases, c)
		}
	}
	if pool := kubectl(`get ippools.crd.projectcalico.org default-ipv4-ippool -o jsonpath='{.spec.cidr} {.spec.ipipMode} {.spec.vxlanMode}'`); pool != "172.31.128.0/18 CrossSubnet Never" {
		t.Errorf("IPPool: %q", pool)
	}
	ds := kubectl(`-n kube-system get ds calico-node -o jsonpath='{.status.desiredNumberScheduled} {.spec.template.spec.containers[0].env[?(@.name=="CALICO_IPV4POOL_CIDR")].value} {.spec.template.spec.containers[0].env[?(@.name=="IP_AUTODETECTION_METHOD")].value}'`)
	if ds != "4 172.31.128.0/18 kubernetes-internal-ip" {
		t.Errorf("calico-node DaemonSet: %q", ds)
	}
	checkEtcd(t, ctx, pool)
	if st, err := os.Stat(filepath.Join(kubeconfigDir, "lab.kubeconfig")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig: %v %v", st, err)
	}

	// A second install with the same arguments changes nothing.
	ident := func() string {
		out, err := host.Output(ctx, cp, "systemctl show -p ActiveEnterTimestampMonotonic --value etcd; crictl ps --name kube-apiserver -q")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := ident()
	start = time.Now()
	r2 := runCLI(t, lab, env, args...)
	second := time.Since(start)
	t.Logf("second install: %s (first %s)", second.Round(100*time.Millisecond), first.Round(time.Second))
	if r2.code != 0 {
		t.Fatalf("re-install exit %d\n%s\n%s", r2.code, r2.stdout, tail(r2.stderr, 30))
	}
	if after := ident(); after != before {
		t.Errorf("a no-op install restarted etcd or kube-apiserver:\n%s\n->\n%s", before, after)
	}
	if strings.Count(r2.stderr, "nothing to do") < 4 {
		t.Errorf("re-run should say nothing to do per node:\n%s", tail(r2.stderr, 40))
	}
	if second > first/10 {
		t.Errorf("re-install took %s, more than 10%% of %s", second, first)
	}
}

// checkEtcd asks etcd itself, with a client certificate issued from the
// cluster's etcd CA, through the first member's SSH connection.
func checkEtcd(t *testing.T, ctx context.Context, pool *ssh.Pool) {
	m1, _ := pool.Host(ssh.Target{Host: "172.31.3.11"})
	crt, err1 := m1.ReadFile(ctx, bootstrap.EtcdPKIDir+"/ca.crt")
	key, err2 := m1.ReadFile(ctx, bootstrap.EtcdPKIDir+"/ca.key")
	if err1 != nil || err2 != nil {
		t.Fatalf("etcd CA: %v %v", err1, err2)
	}
	ca, err := bootstrap.LoadCA(bootstrap.KeyPair{Cert: crt, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	pki, err := bootstrap.NewEtcdPKI(ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	eps := []string{"https://172.31.3.11:2379", "https://172.31.3.12:2379", "https://172.31.4.11:2379"}
	h, err := bootstrap.CheckEtcd(ctx, eps, pki, 3, func(ctx context.Context, addr string) (net.Conn, error) {
		return m1.DialContext(ctx, "tcp", addr)
	})
	if err != nil || strings.Join(h.Members, ",") != "kube-node1,kube-node2,kube-node3" {
		t.Errorf("etcd: %+v %v", h, err)
	}
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
