package ssh

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestTimeoutLimitNamesTheLimitThatFires(t *testing.T) {
	start := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		deadline time.Duration // from start; 0: none
		command  time.Duration
		want     string
	}{
		{"command timeout only", 0, 10 * time.Minute, "10m0s"},
		{"caller's shorter deadline (one run's 30 s unlock)", 30 * time.Second, 10 * time.Minute, "30s (the caller's limit)"},
		{"caller's longer deadline", time.Hour, 10 * time.Minute, "10m0s"},
		{"caller's deadline only", 2 * time.Minute, 0, "2m0s (the caller's limit)"},
		{"neither", 0, 0, "the run's deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, start.Add(tt.deadline))
				defer cancel()
			}
			if got := timeoutLimit(ctx, start, tt.command); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// The TCP dial's deadline is the connect limit's; under load its
// "i/o timeout" came back while the context did not yet report itself
// done, and the node's error read "dial tcp ...: i/o timeout" instead of
// the limit. Both orders must say the same.
func TestConnectTimeoutSaysTheLimitWhicheverTimerFiresFirst(t *testing.T) {
	timeout := &net.OpError{Op: "dial", Net: "tcp", Err: &timeoutErr{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := classifyDial(ctx, timeout, 2*time.Second); err.Error() != "connect: timed out after 2s" {
		t.Errorf("dial timed out first: %v", err)
	}
	done, cancel2 := context.WithTimeout(context.Background(), 0)
	defer cancel2()
	<-done.Done()
	if err := classifyDial(done, context.DeadlineExceeded, 2*time.Second); err.Error() != "connect: timed out after 2s" {
		t.Errorf("context first: %v", err)
	}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	if err := classifyDial(ctx, refused, 2*time.Second); !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("a refusal is not a timeout: %v", err)
	}
}

type timeoutErr struct{}

func (*timeoutErr) Error() string   { return "i/o timeout" }
func (*timeoutErr) Timeout() bool   { return true }
func (*timeoutErr) Temporary() bool { return true }
