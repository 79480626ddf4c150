package install

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/k8slab/k8slab/internal/host"
)

// viaNode is a node's transport that only records the connections it is
// asked to open.
type viaNode struct {
	host.Host
	name string
	got  *[]string
}

func (v viaNode) DialContext(_ context.Context, _, addr string) (net.Conn, error) {
	*v.got = append(*v.got, v.name+"->"+addr)
	return nil, errors.New("recorded")
}

// TestEtcdDialGoesThroughEachMember: every member is reached through its
// own node's SSH connection (by SSH target or node-ip), anything else
// through the first member's.
func TestEtcdDialGoesThroughEachMember(t *testing.T) {
	var got []string
	members := []string{"root@172.31.3.11", "172.31.3.12", "mgmt-node3"}
	hosts := map[string]host.Host{}
	for _, n := range members {
		hosts[n] = viaNode{name: n, got: &got}
	}
	nodeIP := func(n string) []string {
		if n == "mgmt-node3" {
			return []string{"172.31.4.11"}
		}
		return nil
	}
	dial, err := etcdDial(members, hosts, nodeIP)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ addr, want string }{
		{"172.31.3.11:2379", "root@172.31.3.11->172.31.3.11:2379"},
		{"172.31.3.12:2379", "172.31.3.12->172.31.3.12:2379"},
		{"172.31.4.11:2379", "mgmt-node3->172.31.4.11:2379"},
		{"mgmt-node3:2379", "mgmt-node3->mgmt-node3:2379"},
		{"10.0.0.9:2379", "root@172.31.3.11->10.0.0.9:2379"},
	}
	for _, tt := range tests {
		got = nil
		dial(context.Background(), tt.addr)
		if len(got) != 1 || got[0] != tt.want {
			t.Errorf("dial %s: went %v, want %s", tt.addr, got, tt.want)
		}
	}
}

func TestLeaderMoves(t *testing.T) {
	tests := []struct {
		name    string
		started bool
		leader  string
		want    bool
	}{
		{"fresh members, leader elsewhere: home", true, "kube-node3", true},
		{"fresh members, leader home already", true, "kube-node1", false},
		{"re-run that started nothing: left alone", false, "kube-node3", false},
		{"re-run, leader home", false, "kube-node1", false},
	}
	for _, tt := range tests {
		if got := leaderMoves(tt.started, tt.leader, "kube-node1"); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
