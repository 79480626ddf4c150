package install

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	for _, tt := range []struct {
		n, callers, wantMax int
	}{
		{0, 3, 3}, // --join-parallel 0: everyone at once
		{1, 3, 1},
		{2, 5, 2},
	} {
		l := newLimiter(tt.n)
		var now, peak, waited atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range tt.callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				release, err := l.acquire(context.Background(), func() { waited.Add(1) })
				if err != nil {
					t.Error(err)
					return
				}
				if v := now.Add(1); v > peak.Load() {
					peak.Store(v)
				}
				time.Sleep(20 * time.Millisecond)
				now.Add(-1)
				release()
			}()
		}
		close(start)
		wg.Wait()
		if int(peak.Load()) != tt.wantMax || int(waited.Load()) < tt.callers-tt.wantMax {
			t.Errorf("limit %d, %d callers: %d at once (want %d), %d said they wait", tt.n, tt.callers, peak.Load(), tt.wantMax, waited.Load())
		}
	}
	// A caller waiting for a slot gives up with its context.
	l := newLimiter(1)
	release, _ := l.acquire(context.Background(), func() {})
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := l.acquire(ctx, func() {}); err == nil {
		t.Error("acquire on a full limiter returned without a slot")
	}
}
