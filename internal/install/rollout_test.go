package install

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/k8slab/k8slab/calico"
)

// rolloutRead is one answer of the fake API server.
type rolloutRead struct {
	done bool
	err  error
}

func TestWatchRollout(t *testing.T) {
	refused := errors.New(`Get "https://172.31.3.11:6443/api/v1/nodes": ssh: rejected: connect failed ("Connection refused")`)
	pending := calico.NodeReport{Node: "kube-node3", Calico: "ImagePullBackOff quay.io/calico/node:v3.32.1"}
	tests := []struct {
		name     string
		wait     bool
		timeout  time.Duration
		reads    []rolloutRead // the last one repeats
		wantErr  string
		wantSays []string
	}{
		{"no wait: read once", false, time.Hour, []rolloutRead{{}}, "", []string{"not waiting", "kube-node3: calico-node ImagePullBackOff"}},
		{"no wait: an API server restart is waited out", false, time.Hour,
			[]rolloutRead{{err: refused}, {err: refused}, {}}, "", []string{"cannot read it yet", "not waiting"}},
		{"no wait: an API server that stays away fails", false, 20 * time.Millisecond,
			[]rolloutRead{{err: refused}}, "reading the rollout for", nil},
		{"wait: until done, saying when each part became ready", true, time.Hour, []rolloutRead{{}, {err: refused}, {done: true}}, "",
			[]string{"rollout: kube-node3: node Ready after 0s\nrollout: kube-node3: calico-node ready after 0s\nrollout: calico-kube-controllers available after 0s\n", "all nodes Ready"}},
		{"wait: not done in time names the nodes", true, 20 * time.Millisecond, []rolloutRead{{}}, "kube-node3: calico-node ImagePullBackOff", nil},
		{"wait: a failed last read keeps the rollout seen before", true, 20 * time.Millisecond,
			[]rolloutRead{{}, {err: refused}}, "kube-node3: calico-node ImagePullBackOff", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := 0
			read := func(context.Context) (calico.Status, error) {
				r := tt.reads[min(i, len(tt.reads)-1)]
				i++
				if r.err != nil {
					return calico.Status{}, r.err
				}
				if r.done {
					return calico.Status{Nodes: []calico.NodeReport{{Node: "kube-node3", Ready: true, Calico: calico.CalicoReady}}, Desired: 4, Done: true,
						Workloads: []calico.Workload{{Name: "calico-kube-controllers", Ready: true}}}, nil
				}
				return calico.Status{Nodes: []calico.NodeReport{pending}, Desired: 4}, nil
			}
			var status strings.Builder
			err := watchRollout(context.Background(), read, tt.wait, tt.timeout, time.Millisecond, &status)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q\n%s", err, tt.wantErr, status.String())
			}
			for _, s := range tt.wantSays {
				if !strings.Contains(status.String(), s) {
					t.Errorf("status lacks %q:\n%s", s, status.String())
				}
			}
			var incomplete *RolloutIncomplete
			if tt.wait && tt.wantErr != "" && !errors.As(err, &incomplete) {
				t.Errorf("err is %T, want *RolloutIncomplete (exit 5)", err)
			}
			if tt.wantErr == "" && i < len(tt.reads) {
				t.Errorf("stopped after %d reads, want %d", i, len(tt.reads))
			}
		})
	}
}

// An incomplete rollout in as-per-rack mode names each node whose session
// with its rack's router is not up, with the router, AS and state.
func TestRolloutIncompleteNamesThePeering(t *testing.T) {
	e := &RolloutIncomplete{Wait: time.Minute, Status: calico.Status{Nodes: []calico.NodeReport{
		{Node: "kube-node3", Ready: true, Calico: "calico/node is not ready: BIRD is not ready: BGP not established with 172.31.4.1"}}},
		Peering: []string{calico.PeeringProblems("kube-node3", calico.Rack{Name: "leaf2", Router: "172.31.4.1", ASN: 65002},
			[]calico.BGPPeerState{{PeerIP: "172.31.4.1", State: "Active", Type: "GlobalPeer"}})}}
	want := "\n  kube-node3: calico-node calico/node is not ready: BIRD is not ready: BGP not established with 172.31.4.1\n  kube-node3: BGP with 172.31.4.1 (AS65002) Active"
	if got := e.Error(); !strings.HasSuffix(got, want) {
		t.Errorf("got %q, want it to end with %q", got, want)
	}
}

// A slow read means a loaded API server: the rollout then waits four times
// as long as the read took before the next one, whatever its poll.
func TestWatchRolloutPacesSlowReads(t *testing.T) {
	reads := 0
	read := func(context.Context) (calico.Status, error) {
		reads++
		time.Sleep(30 * time.Millisecond)
		return calico.Status{Nodes: []calico.NodeReport{{Node: "kube-node3", Calico: "Running, not ready"}}, Desired: 1}, nil
	}
	var status strings.Builder
	err := watchRollout(context.Background(), read, true, 400*time.Millisecond, time.Millisecond, &status)
	if err == nil {
		t.Fatal("an unfinished rollout ended without an error")
	}
	// Paced: a read every 150 ms at most (30 ms read + 120 ms pause), so 4
	// in 400 ms; unpaced, a 1 ms poll would make 13.
	if reads > 5 {
		t.Errorf("%d reads in 400 ms of 30 ms reads, want at most 5", reads)
	}
}

func TestPace(t *testing.T) {
	for _, tt := range []struct{ least, took, want time.Duration }{
		{500 * time.Millisecond, 10 * time.Millisecond, 500 * time.Millisecond},
		{time.Second, 2 * time.Second, 8 * time.Second},
	} {
		if got := pace(tt.least, tt.took); got != tt.want {
			t.Errorf("pace(%s, %s) = %s, want %s", tt.least, tt.took, got, tt.want)
		}
	}
}
