package install

import (
	"context"
	"fmt"
	"sync"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/kube"
)

// Access is what the control-plane phase hands to the phases after it:
// the admin kubeconfig every API call uses, and for the joins the CA's
// public-key hash and this run's bootstrap token. Phases() makes one and
// gives it to each phase that needs it (their Access field), so what a
// phase takes from another is in its declaration, not in the shared
// Context. Commands that act on an installed cluster without running the
// control-plane phase fill it with LoadAccess.
type Access struct {
	mu        sync.Mutex
	adminConf []byte
	caHash    string
	// token is empty when this run did not run kubeadm init (the
	// cluster was there): Join then creates one through the API.
	token string
	// connect reaches the API server (KubeClient: through the control
	// plane's SSH connection); a phase's unit test gives a fake clientset.
	connect func(cp host.Host, admin []byte) (*kube.Client, error)
}

// LoadAccess reads admin.conf from the control plane, for commands that
// act on an installed cluster without running the install phases.
func (c *Context) LoadAccess(ctx context.Context) (*Access, error) {
	b, err := c.Hosts[c.Cluster.ControlPlane].ReadFile(ctx, adminConfPath)
	if err != nil {
		return nil, fmt.Errorf("host %s: no installed cluster: %w", c.Cluster.ControlPlane, err)
	}
	return &Access{adminConf: b}, nil
}

func (a *Access) setAdmin(admin []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.adminConf = admin
}

func (a *Access) set(admin []byte, caHash, token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.adminConf, a.caHash, a.token = admin, caHash, token
}

// admin is the admin kubeconfig, or an error naming the phase that makes it.
func (a *Access) admin() ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.adminConf == nil {
		return nil, fmt.Errorf("no admin kubeconfig: the control-plane phase must run first (it is idempotent)")
	}
	return a.adminConf, nil
}

// join is what a joining node needs from the control plane.
func (a *Access) join() (caHash, token string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.adminConf == nil || a.caHash == "" {
		return "", "", fmt.Errorf("no cluster credentials: the control-plane phase must run first (it is idempotent: --only control-plane,join)")
	}
	return a.caHash, a.token, nil
}

// client reaches the API server through the control plane's SSH
// connection, as the cluster's admin.
func (a *Access) client(cp host.Host) (*kube.Client, error) {
	admin, err := a.admin()
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	connect := a.connect
	a.mu.Unlock()
	if connect == nil {
		connect = KubeClient
	}
	return connect(cp, admin)
}
