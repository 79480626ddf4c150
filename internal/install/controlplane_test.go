package install

import (
	"slices"
	"testing"

	"github.com/k8slab/k8slab/internal/cluster"
)

func TestAPIServerEtcdEndpoints(t *testing.T) {
	tests := []struct {
		name string
		etcd []string
		want []string
	}{
		{"control plane is a member: its own member only", []string{"172.31.3.11", "172.31.3.12", "172.31.4.11"}, []string{"https://172.31.3.11:2379"}},
		{"control plane is not a member: all of them", []string{"172.31.3.12", "172.31.4.11", "172.31.4.12"}, []string{"https://172.31.3.12:2379", "https://172.31.4.11:2379", "https://172.31.4.12:2379"}},
		{"stacked etcd: none (kubeadm's local etcd)", []string{"172.31.3.11"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &cluster.Config{Nodes: []string{"172.31.3.11", "172.31.3.12", "172.31.4.11", "172.31.4.12"}, Etcd: tt.etcd}
			cfg.Default()
			c := &Context{Cluster: cfg}
			c.setFacts("172.31.3.11", c.Facts("172.31.3.11"), "172.31.3.11")
			cp := &ControlPlane{Context: c, Etcd: &Etcd{c}, Access: &Access{}}
			if got := cp.etcdEndpoints(); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
