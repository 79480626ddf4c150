package install

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/k8slab/k8slab/bootstrap"
	"github.com/k8slab/k8slab/internal/cluster"
	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/host/hosttest"
)

// unreadable is a node whose file reads fail the way one run's
// control-plane VM did: no answer in time.
type unreadable struct{ host.Host }

func (unreadable) ReadFile(context.Context, string) ([]byte, error) {
	return nil, errors.New("read /etc/etcd/pki/ca.crt: timed out after 30s (the caller's limit)")
}

// Every reader of a node's state that treats "absent" specially:
// reset's etcd access, the etcd phase's CA (a new one would re-sign a
// working cluster), its member certificates (re-issuing one restarts a
// working member) and preflight's record check.
func TestStateReadersTellAbsentFromNoAnswer(t *testing.T) {
	cfg := &cluster.Config{Nodes: []string{"172.31.3.11", "172.31.3.12", "172.31.4.11"}}
	cfg.Default()
	tests := []struct {
		name    string
		node    host.Host
		wantErr string
	}{
		// hosttest.Local reads this machine's files: no /etc/etcd/pki here.
		{"no CA on the node: no etcd, no error", &hosttest.Local{Label: "172.31.3.11"}, ""},
		{"the node did not answer: an error naming it", unreadable{&hosttest.Local{Label: "172.31.3.11"}}, "host 172.31.3.11: read /etc/etcd/pki/ca.crt: timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts := map[string]host.Host{}
			for _, n := range cfg.Nodes {
				hosts[n] = tt.node
			}
			ctx := context.Background()
			acc, err := NewEtcdAccess(ctx, cfg, hosts)
			if tt.wantErr == "" && (err != nil || acc != nil) || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("etcd access: got %v, %v; want error %q", acc, err, tt.wantErr)
			}
			c := &Context{Cluster: cfg, Hosts: hosts}
			ca, err := (&Etcd{c}).loadOrCreateCA(ctx)
			if tt.wantErr == "" && (err != nil || ca == nil) || tt.wantErr != "" && (err == nil || ca != nil) {
				t.Errorf("etcd CA: got %v, %v; want a new CA only when no member has one", ca != nil, err)
			}
			if ca == nil {
				ca, _ = bootstrap.NewCA("etcd-ca")
			}
			ok, err := validCert(ctx, tt.node, "/etc/etcd/pki/server.crt", ca)
			if ok || tt.wantErr == "" && err != nil || tt.wantErr != "" && err == nil {
				t.Errorf("member certificate: got %v, %v; want an error only when the node did not answer", ok, err)
			}
			err = (&Preflight{c}).compareRecord(ctx)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && err == nil {
				t.Errorf("record check: %v, want an error only when the node did not answer", err)
			}
		})
	}
}
