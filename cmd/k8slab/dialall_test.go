package main

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/k8slab/k8slab/internal/host"
	"github.com/k8slab/k8slab/internal/run"
	"github.com/k8slab/k8slab/internal/ssh"
	"github.com/k8slab/k8slab/internal/ssh/sshtest"
)

// TestSessionDialAll_SimulatedSSH dials SIMULATED endpoints (sshtest's
// in-process servers): every reachable node is connected once dialAll
// returns, and an unreachable one leaves it to the node's next use.
func TestSessionDialAll_SimulatedSSH(t *testing.T) {
	dir := t.TempDir()
	srv, err := sshtest.Start(3, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// A port nothing listens on: refused at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	pool, err := ssh.NewPool(ssh.Options{User: "root", UserSet: true, KeyFiles: []string{srv.KeyFile},
		KnownHostsFile: filepath.Join(dir, "known_hosts"), HostKeyPolicy: ssh.AcceptNew, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := &session{pool: pool}
	want := map[string]int{dead: 0}
	for _, a := range append(srv.Addrs, dead) {
		tg, err := ssh.ParseTarget(a)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := pool.Host(tg)
		if err != nil {
			t.Fatal(err)
		}
		s.clients = append(s.clients, cl)
		if a != dead {
			want[a] = 1
		}
	}
	s.dialAll(context.Background())
	for _, cl := range s.clients {
		if got := cl.Dials(); got != want[cl.Name()] {
			t.Errorf("%s: %d connections after dialAll, want %d", cl.Name(), got, want[cl.Name()])
		}
	}
}

// closingHost records whether its connection was closed.
type closingHost struct {
	host.Host
	closed bool
}

func (c *closingHost) Close() error { c.closed = true; return nil }

// oneShot hangs up a node's connection once its work is done, also when
// the work failed.
func TestOneShotHangsUp(t *testing.T) {
	for _, fail := range []bool{false, true} {
		h := &closingHost{}
		var closedDuring bool
		step := oneShot(run.Step{Name: "exec", Do: func(ctx context.Context, tk *run.Task) error {
			closedDuring = h.closed
			if fail {
				return errors.New("failed")
			}
			return nil
		}})
		step.Do(context.Background(), &run.Task{Host: h})
		if closedDuring || !h.closed {
			t.Errorf("failing=%v: closed during the work %v, after it %v; want false, true", fail, closedDuring, h.closed)
		}
	}
}
