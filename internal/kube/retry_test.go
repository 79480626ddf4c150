package kube

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestTransient(t *testing.T) {
	crd := schema.GroupResource{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"the API server's own request timeout (seen on the VMs)", apierrors.NewTimeoutError("request did not complete within requested timeout - context deadline exceeded", 0), true},
		{"server timeout", apierrors.NewServerTimeout(crd, "patch", 1), true},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), true},
		{"etcd timed out (500)", apierrors.NewInternalError(errors.New("etcdserver: request timed out")), true},
		{"unavailable", apierrors.NewServiceUnavailable("starting"), true},
		{"network error", &net.OpError{Op: "dial", Err: errors.New("i/o timeout")}, true},
		{"refused through the tunnel", errors.New(`ssh: rejected: connect failed ("Connection refused")`), true},
		{"bad request: retrying cannot help", apierrors.NewBadRequest("invalid patch"), false},
		{"forbidden", apierrors.NewForbidden(crd, "x", errors.New("no")), false},
		{"invalid object", apierrors.NewInvalid(schema.GroupKind{Kind: "IPPool"}, "default", nil), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := transient(tt.err); got != tt.want {
				t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestRetryTransient(t *testing.T) {
	timeout := apierrors.NewTimeoutError("request did not complete within requested timeout", 0)
	bad := apierrors.NewBadRequest("invalid patch")
	tests := []struct {
		name    string
		results []error
		budget  time.Duration
		calls   int
		wantErr error
	}{
		{"succeeds after two server timeouts", []error{timeout, timeout, nil}, time.Hour, 3, nil},
		{"a permanent error is returned at once", []error{bad, nil}, time.Hour, 1, bad},
		{"no budget: no second call", []error{timeout, nil}, 0, 1, timeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := RetryTransient(context.Background(), tt.budget, time.Millisecond, func() error {
				calls++
				return tt.results[calls-1]
			})
			if calls != tt.calls || !errors.Is(err, tt.wantErr) {
				t.Errorf("%d calls, err %v; want %d, %v", calls, err, tt.calls, tt.wantErr)
			}
		})
	}
}
