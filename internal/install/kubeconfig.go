package install

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/phase"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Kubeconfig saves the admin kubeconfig as <dir>/<cluster>.kubeconfig
// (0600) with the API server's address on the lab network, and merges it
// into ~/.kube/config when asked.
type Kubeconfig struct {
	*Context
	Access *Access // from the control-plane phase
}

func (*Kubeconfig) Name() string { return "kubeconfig" }

func (k *Kubeconfig) path() string {
	return filepath.Join(k.KubeconfigDir, k.Cluster.Name+".kubeconfig")
}

func (k *Kubeconfig) Plan() []phase.Step {
	a := "write " + k.path() + " (0600)"
	if k.MergeKubeconfig != "" {
		a += ", merge into " + k.MergeKubeconfig
	}
	return []phase.Step{{Action: a}}
}

func (k *Kubeconfig) Run(ctx context.Context) error {
	admin, err := k.Access.admin()
	if err != nil {
		return err
	}
	cfg, err := clientcmd.Load(admin)
	if err != nil {
		return fmt.Errorf("admin.conf: %w", err)
	}
	ip := k.controlPlane().IP
	if ip == "" { // no preflight in this run (k8slab kubeconfig)
		ip = cluster.Address(k.Cluster.ControlPlane)
	}
	server := "https://" + net.JoinHostPort(ip, "6443")
	named := clientcmdapi.NewConfig()
	for _, cl := range cfg.Clusters {
		c := cl.DeepCopy()
		c.Server = server
		named.Clusters[k.Cluster.Name] = c
	}
	for _, u := range cfg.AuthInfos {
		named.AuthInfos[k.Cluster.Name+"-admin"] = u.DeepCopy()
	}
	ctxName := k.Cluster.Name + "-admin@" + k.Cluster.Name
	named.Contexts[ctxName] = &clientcmdapi.Context{Cluster: k.Cluster.Name, AuthInfo: k.Cluster.Name + "-admin"}
	named.CurrentContext = ctxName
	if err := os.MkdirAll(filepath.Dir(k.path()), 0o700); err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(*named, k.path()); err != nil {
		return err
	}
	if err := os.Chmod(k.path(), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(k.Runner.StatusWriter(), "kubeconfig: %s (server %s)\n", k.path(), server)
	if k.MergeKubeconfig == "" {
		return nil
	}
	into, err := clientcmd.LoadFromFile(k.MergeKubeconfig)
	if os.IsNotExist(err) {
		into, err = clientcmdapi.NewConfig(), nil
	}
	if err != nil {
		return fmt.Errorf("--merge-kubeconfig %s: %w", k.MergeKubeconfig, err)
	}
	for n, c := range named.Clusters {
		into.Clusters[n] = c
	}
	for n, u := range named.AuthInfos {
		into.AuthInfos[n] = u
	}
	for n, c := range named.Contexts {
		into.Contexts[n] = c
	}
	into.CurrentContext = ctxName
	if err := os.MkdirAll(filepath.Dir(k.MergeKubeconfig), 0o700); err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(*into, k.MergeKubeconfig); err != nil {
		return err
	}
	return os.Chmod(k.MergeKubeconfig, 0o600)
}
