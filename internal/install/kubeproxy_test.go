package install

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/calico"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// fakeNft is a node whose nft prints kube-proxy's service map as given
// (the real programmedScript runs in /bin/sh against it).
func fakeNft(t *testing.T, serviceMap string) *hosttest.Local {
	dir := t.TempDir()
	script := "#!/bin/sh\ncat <<'EOF'\n" + serviceMap + "\nEOF\n"
	if err := os.WriteFile(filepath.Join(dir, "nft"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return &hosttest.Local{Env: []string{"PATH=" + dir + ":" + os.Getenv("PATH")}}
}

func TestProxyWatchRestartsAKubeProxyWithoutTheService(t *testing.T) {
	const programmed = "table ip kube-proxy {\n\tmap service-ips {\n\t\telements = { 172.31.64.1 . tcp . 443 : goto service-2QRHZV4L-default/kubernetes/tcp/https }\n\t}\n}"
	const empty = "table ip kube-proxy {\n\tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t}\n}"
	notReady := calico.Status{Nodes: []calico.NodeReport{{Node: "kube-node1", Calico: "CrashLoopBackOff quay.io/calico/node:v3.32.1"}}}
	for _, tt := range []struct {
		name        string
		serviceMap  string
		wantRestart bool
	}{
		{"the Service is missing", empty, true},
		{"the Service is programmed", programmed, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kc := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy-dgs9r", Namespace: "kube-system", Labels: map[string]string{"k8s-app": "kube-proxy"}},
				Spec: corev1.PodSpec{NodeName: "kube-node1"}})
			var status bytes.Buffer
			w := newProxyWatch(kc, map[string]host.Host{"kube-node1": fakeNft(t, tt.serviceMap)}, "172.31.64.0/18", "nftables", &status)
			w.after = 20 * time.Millisecond
			ctx := context.Background()
			w.look(ctx, notReady) // first seen not ready: nothing yet
			if status.Len() > 0 {
				t.Fatalf("acted at once: %s", status.String())
			}
			time.Sleep(30 * time.Millisecond)
			w.look(ctx, notReady)
			time.Sleep(30 * time.Millisecond)
			w.look(ctx, notReady) // at most one restart per node
			pods, _ := kc.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
			restarted := len(pods.Items) == 0
			if restarted != tt.wantRestart {
				t.Errorf("restarted %v, want %v; said %q", restarted, tt.wantRestart, status.String())
			}
			if tt.wantRestart && strings.Count(status.String(), "restarting kube-proxy") != 1 {
				t.Errorf("said %q", status.String())
			}
		})
	}
}
