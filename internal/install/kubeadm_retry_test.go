package install

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/bootstrap"
)

func TestRetryKubeadm(t *testing.T) {
	join := bootstrap.Detached{Unit: "k8slab-kubeadm-join", Command: "join"}
	resume := bootstrap.Detached{Unit: "k8slab-kubeadm-join", Command: "join --ignore-preflight-errors=all"}
	preflight := errors.New("k8slab-kubeadm-join exited with 1 (log /var/log/k8slab/k8slab-kubeadm-join.log on the node):\n[preflight] Running pre-flight checks\nerror execution phase preflight: couldn't validate the identity of the API Server\nTo see the stack trace of this error execute with --v=5 or higher")
	refused := errors.New(`error execution phase kubelet-start: cannot get Node "kube-node2": dial tcp 172.31.3.11:6443: connect: connection refused`)
	other := errors.New("error execution phase kubelet-start: node name already taken")
	slowAPI := errors.New("k8slab-kubeadm-join exited with 1:\nerror execution phase preflight: unable to fetch the kubeadm-config ConfigMap: failed to get component configs: could not download the kube-proxy configuration from ConfigMap \"kube-proxy\": Get \"https://172.31.3.11:6443/api/v1/namespaces/kube-system/configmaps/kube-proxy?timeout=10s\": net/http: request canceled (Client.Timeout exceeded while awaiting headers)")
	// Run T, kube-node2: the first attempt timed out in kubelet-start
	// (files written), the resumed one in its preflight; kubeadm's log
	// carries a DNS warning with "connection refused" in every attempt.
	dnsWarning := "\t[WARNING Hostname]: hostname \"kube-node2\": lookup kube-node2 on [::1]:53: read udp [::1]:47927->[::1]:53: read: connection refused\n"
	slowKubeletStart := errors.New("k8slab-kubeadm-join exited with 1:\n" + dnsWarning + `error execution phase kubelet-start: cannot get Node "kube-node2": the server was unable to return a response in the time allotted, but may still be processing the request (get nodes kube-node2)`)
	slowResumedPreflight := errors.New("k8slab-kubeadm-join exited with 1:\n" + dnsWarning + slowAPI.Error()[len("k8slab-kubeadm-join exited with 1:\n"):])
	leftovers := errors.New("k8slab-kubeadm-join exited with 1:\n" + dnsWarning + "[preflight] Some fatal errors occurred:\n\t[ERROR FileAvailable--etc-kubernetes-bootstrap-kubelet.conf]: /etc/kubernetes/bootstrap-kubelet.conf already exists\nerror execution phase preflight: preflight checks failed")
	tests := []struct {
		name    string
		results []error // one per attempt
		resume  *bootstrap.Detached
		time    int      // how many more pauses the wait allows; -1: no limit
		want    []string // commands run
		wantErr error
	}{
		{"first try", []error{nil}, &resume, -1, []string{"join"}, nil},
		{"preflight failed: the same step again", []error{preflight, nil}, &resume, -1, []string{"join", "join"}, nil},
		{"API server gone mid-join: resumed", []error{refused, refused, nil}, &resume, -1, []string{"join", "join --ignore-preflight-errors=all", "join --ignore-preflight-errors=all"}, nil},
		{"API server gone, step not resumable (init)", []error{refused}, nil, -1, []string{"join"}, refused},
		{"another failure: no retry", []error{other}, &resume, -1, []string{"join"}, other},
		{"three attempts at most", []error{preflight, preflight, preflight, nil}, &resume, -1, []string{"join", "join", "join"}, preflight},
		{"preflight on a slow API server: past three while the wait allows", []error{slowAPI, slowAPI, slowAPI, slowAPI, nil}, &resume, -1, []string{"join", "join", "join", "join", "join"}, nil},
		{"resumed, then a slow preflight: still resumed", []error{slowKubeletStart, slowResumedPreflight, nil}, &resume, -1,
			[]string{"join", "join --ignore-preflight-errors=all", "join --ignore-preflight-errors=all"}, nil},
		{"a refused preflight with a DNS warning above it is no slow API server", []error{leftovers, leftovers, leftovers, leftovers}, &resume, -1,
			[]string{"join", "join", "join"}, leftovers},
		{"preflight on a slow API server: until the wait is over", []error{slowAPI, slowAPI, slowAPI, slowAPI, slowAPI, nil}, &resume, 3, []string{"join", "join", "join", "join"}, slowAPI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran, said []string
			left := tt.time
			timeLeft := func(time.Duration) bool {
				left--
				return tt.time < 0 || left >= 0
			}
			err := retryKubeadm(context.Background(), join, tt.resume, 0, timeLeft, func(d bootstrap.Detached) error {
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
