package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"testing"
)

func TestProbe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan net.Addr, 1)
	var serveOut bytes.Buffer
	go serve(ctx, "127.0.0.1:0", &serveOut, ready)
	up := "http://" + (<-ready).String() + "/"
	// A port nobody listens on: bind one, note it, close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String() + "/"
	l.Close()
	msg := t.TempDir() + "/message"

	tests := []struct {
		name     string
		args     []string
		code     int
		wantLast string
	}{
		{"reachable server", []string{"get", up}, 0, "answered: k8slab-probe "},
		{"closed port, wanted reachable", []string{"get", "-for", "0s", down}, 1, "unreachable"},
		{"closed port, wanted unreachable", []string{"get", "-want", "unreachable", down}, 0, "unreachable"},
		{"open port, wanted unreachable", []string{"get", "-want", "unreachable", "-for", "0s", up}, 1, "answered"},
		{"resolve from /etc/hosts", []string{"resolve", "localhost"}, 0, "localhost resolves to "},
		{"unknown want", []string{"get", "-want", "maybe", up}, 2, "bad arguments"},
		{"no command", nil, 2, "usage"},
		{"get without URL", []string{"get"}, 2, "bad arguments"},
		{"reason kept for the pod status", []string{"get", "-message", msg, up}, 0, "answered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(ctx, tt.args, &out)
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if code != tt.code || !strings.Contains(lines[len(lines)-1], tt.wantLast) {
				t.Errorf("exit %d, output %q; want %d and a last line with %q", code, out.String(), tt.code, tt.wantLast)
			}
		})
	}
	if b, err := os.ReadFile(msg); err != nil || !strings.HasPrefix(string(b), up+" answered: k8slab-probe ") {
		t.Errorf("-message file: %q %v", b, err)
	}
}
