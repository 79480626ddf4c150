package verify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/kube"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// failingAPI answers its first fails node listings with err.
func failingAPI(fails int, err error) (*fake.Clientset, *int) {
	kc := fake.NewClientset()
	calls := 0
	kc.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		if calls <= fails {
			return true, nil, err
		}
		return false, nil, nil
	})
	return kc, &calls
}

func TestReadClusterRetriesWhileTheAPIServerSaysNotNow(t *testing.T) {
	tlsTimeout := errors.New(`Get "https://172.31.3.11:6443/api/v1/nodes": net/http: TLS handshake timeout`)
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New("no"))
	tests := []struct {
		name      string
		fails     int
		err       error
		wait      time.Duration
		wantCalls int
		wantErr   bool
	}{
		{"answers at once", 0, nil, time.Minute, 1, false},
		{"a TLS handshake timeout, then an answer", 1, tlsTimeout, time.Minute, 2, false},
		{"still timing out when the wait is over", 100, tlsTimeout, time.Second, 1, true},
		{"forbidden is an answer: not asked again", 100, forbidden, time.Minute, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc, calls := failingAPI(tt.fails, tt.err)
			_, _, err := readCluster(context.Background(), kc, tt.wait)
			if (err != nil) != tt.wantErr || *calls != tt.wantCalls {
				t.Fatalf("err %v after %d calls; want error %v after %d", err, *calls, tt.wantErr, tt.wantCalls)
			}
		})
	}
}

func TestRunJudgesAnAPIServerThatDoesNotAnswer(t *testing.T) {
	kc, _ := failingAPI(100, errors.New("net/http: TLS handshake timeout"))
	checks := Run(context.Background(), Cluster{Config: labConfig(), Kube: &kube.Client{Kube: kc}, APIWait: time.Second})
	got := map[string]Check{}
	for _, c := range checks {
		got[c.Name] = c
	}
	if c := got[apiCheck]; c.Status != Fail || !strings.Contains(c.Reason, "TLS handshake timeout") {
		t.Errorf("%s: %+v", apiCheck, c)
	}
	if c := got["etcd members healthy"]; c.Status != Skip {
		t.Errorf("etcd is judged without the API server: %+v", c)
	}
	if Failed(checks) != 1 || len(checks) != 3 {
		t.Errorf("checks: %+v", checks)
	}
}
