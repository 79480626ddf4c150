package ssh

import (
	"context"
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
