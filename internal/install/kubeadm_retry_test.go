package install

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/k8slab/k8slab/bootstrap"
)

func TestRetryKubeadm(t *testing.T) {
	join := bootstrap.Detached{Unit: "k8slab-kubeadm-join", Command: "join"}
	resume := bootstrap.Detached{Unit: "k8slab-kubeadm-join", Command: "join --ignore-preflight-errors=all"}
	preflight := errors.New("k8slab-kubeadm-join exited with 1 (log /var/log/k8slab/k8slab-kubeadm-join.log on the node):\n[preflight] Running pre-flight checks\nerror execution phase preflight: couldn't validate the identity of the API Server\nTo see the stack trace of this error execute with --v=5 or higher")
	refused := errors.New(`error execution phase kubelet-start: cannot get Node "kube-node2": dial tcp 172.31.3.11:6443: connect: connection refused`)
	other := errors.New("error execution phase kubelet-start: node name already taken")
	tests := []struct {
		name    string
		results []error // one per attempt
		resume  *bootstrap.Detached
		want    []string // commands run
		wantErr error
	}{
		{"first try", []error{nil}, &resume, []string{"join"}, nil},
		{"preflight failed: the same step again", []error{preflight, nil}, &resume, []string{"join", "join"}, nil},
		{"API server gone mid-join: resumed", []error{refused, refused, nil}, &resume, []string{"join", "join --ignore-preflight-errors=all", "join --ignore-preflight-errors=all"}, nil},
		{"API server gone, step not resumable (init)", []error{refused}, nil, []string{"join"}, refused},
		{"another failure: no retry", []error{other}, &resume, []string{"join"}, other},
		{"three attempts at most", []error{preflight, preflight, preflight, nil}, &resume, []string{"join", "join", "join"}, preflight},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran, said []string
			err := retryKubeadm(context.Background(), join, tt.resume, 0, func(d bootstrap.Detached) error {
				ran = append(ran, d.Command)
				return tt.results[len(ran)-1]
			}, func(s string) { said = append(said, s) })
			if !slices.Equal(ran, tt.want) || !errors.Is(err, tt.wantErr) {
				t.Errorf("ran %q, err %v; want %q, %v", ran, err, tt.want, tt.wantErr)
			}
			// Each retry says which line of kubeadm's output failed.
			for i, s := range said {
				if !strings.Contains(s, "("+failedLine(tt.results[i])+")") || !strings.Contains(s, "error execution phase") {
					t.Errorf("retry status %q does not name the failure %q", s, tt.results[i])
				}
			}
		})
	}
}
