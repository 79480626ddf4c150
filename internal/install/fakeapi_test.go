package install

import (
	"testing"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/kube"
	"github.com/k8slab/k8slab/internal/run"
	"k8s.io/client-go/kubernetes/fake"
)

// quietRunner is a runner for phase tests: no hosts of its own, no output.
func quietRunner(t *testing.T) *run.Runner {
	t.Helper()
	r, err := run.New(run.Options{Command: "install"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fakeAPIAccess is the control plane's hand-over, with its API server a
// fake clientset instead of one reached through SSH.
func fakeAPIAccess(kc *fake.Clientset) *Access {
	a := &Access{connect: func(host.Host, []byte) (*kube.Client, error) { return &kube.Client{Kube: kc}, nil }}
	a.setAdmin([]byte("admin.conf"))
	return a
}

// calls counts the fake API server's requests with verb (get, update, patch...).
func calls(kc *fake.Clientset, verb string) (n int) {
	for _, a := range kc.Actions() {
		if a.GetVerb() == verb {
			n++
		}
	}
	return n
}
