package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/host"
)

// readFileIfExists tells a file that is not there (nil, nil) from one that
// could not be read: a node that does not answer is not a node without
// the file (one run's timeout read as "no etcd CA").
func readFileIfExists(ctx context.Context, h host.Host, path string) ([]byte, error) {
	b, err := h.ReadFile(ctx, path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name(), err)
	}
	return b, nil
}

// readCA loads the CA in dir on h; nil when its certificate or key is not
// there.
func readCA(ctx context.Context, h host.Host, dir string) (*bootstrap.CA, error) {
	crt, err := readFileIfExists(ctx, h, dir+"/ca.crt")
	if crt == nil || err != nil {
		return nil, err
	}
	key, err := readFileIfExists(ctx, h, dir+"/ca.key")
	if key == nil || err != nil {
		return nil, err
	}
	ca, err := bootstrap.LoadCA(bootstrap.KeyPair{Cert: crt, Key: key})
	if err != nil {
		return nil, fmt.Errorf("host %s: %s: %w", h.Name(), dir, err)
	}
	return ca, nil
}
