package install

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/run"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The kubeconfig phase names everything after the cluster, points it at
// the control plane's address on the lab network, and merges without
// losing what the user's kubeconfig already had.
func TestKubeconfigWritesAndMergesWithoutLosingTheUsers(t *testing.T) {
	dir := t.TempDir()
	admin := clientcmdapi.NewConfig()
	admin.Clusters["kubernetes"] = &clientcmdapi.Cluster{Server: "https://kube-node1:6443", CertificateAuthorityData: []byte("ca")}
	admin.AuthInfos["kubernetes-admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: []byte("cert"), ClientKeyData: []byte("key")}
	admin.Contexts["kubernetes-admin@kubernetes"] = &clientcmdapi.Context{Cluster: "kubernetes", AuthInfo: "kubernetes-admin"}
	adminConf, err := clientcmd.Write(*admin)
	if err != nil {
		t.Fatal(err)
	}
	users := clientcmdapi.NewConfig()
	users.Clusters["prod"] = &clientcmdapi.Cluster{Server: "https://prod:6443"}
	users.AuthInfos["me"] = &clientcmdapi.AuthInfo{Token: "t"}
	users.Contexts["prod"] = &clientcmdapi.Context{Cluster: "prod", AuthInfo: "me"}
	users.CurrentContext = "prod"
	merge := filepath.Join(dir, "home", "config")
	os.MkdirAll(filepath.Dir(merge), 0o700)
	if err := clientcmd.WriteToFile(*users, merge); err != nil {
		t.Fatal(err)
	}

	r, err := run.New(run.Options{Command: "install"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &Context{Cluster: &cluster.Config{Name: "lab", ControlPlane: "root@172.31.3.11"}, Runner: r,
		KubeconfigDir: filepath.Join(dir, "out"), MergeKubeconfig: merge}
	a := &Access{}
	a.setAdmin(adminConf)
	if err := (&Kubeconfig{Context: c, Access: a}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}

	written := filepath.Join(dir, "out", "lab.kubeconfig")
	if fi, err := os.Stat(written); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v (want 0600)", written, err, fi)
	}
	got, err := clientcmd.LoadFromFile(written)
	if err != nil {
		t.Fatal(err)
	}
	if got.CurrentContext != "lab-admin@lab" || got.Clusters["lab"] == nil || got.Clusters["lab"].Server != "https://172.31.3.11:6443" ||
		string(got.AuthInfos["lab-admin"].ClientKeyData) != "key" {
		t.Errorf("written kubeconfig: context %q, clusters %v", got.CurrentContext, got.Clusters)
	}
	merged, err := clientcmd.LoadFromFile(merge)
	if err != nil {
		t.Fatal(err)
	}
	if merged.Clusters["prod"] == nil || merged.AuthInfos["me"] == nil || merged.Contexts["prod"] == nil {
		t.Errorf("the merge lost the user's own entries: %v %v %v", merged.Clusters, merged.AuthInfos, merged.Contexts)
	}
	if merged.Contexts["lab-admin@lab"] == nil || merged.CurrentContext != "lab-admin@lab" {
		t.Errorf("the merge did not add and select the lab: current %q", merged.CurrentContext)
	}
	if fi, _ := os.Stat(merge); fi.Mode().Perm() != 0o600 {
		t.Errorf("merged kubeconfig mode %v", fi.Mode().Perm())
	}
}
