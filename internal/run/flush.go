package run

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// flushInterval bounds how late a buffered progress or log line shows:
// late enough that many hosts' lines share a write (one write per line
// was 1,800 system calls for `exec` on 200 hosts, as many as its SSH
// traffic), soon enough for `tail -f` and CI logs.
const flushInterval = 250 * time.Millisecond

// flushWriter is a buffered writer safe for the task goroutines that
// write it and the runner's flusher that empties it.
type flushWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func newFlushWriter(w io.Writer) *flushWriter { return &flushWriter{w: bufio.NewWriter(w)} }

func (f *flushWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.w.Write(p)
}

func (f *flushWriter) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.w.Flush()
}

// immediate writes through a flushWriter and flushes: run-level messages
// are rare and come after the buffered progress lines, in order.
type immediate struct{ f *flushWriter }

func (i immediate) Write(p []byte) (int, error) {
	i.f.mu.Lock()
	defer i.f.mu.Unlock()
	n, err := i.f.w.Write(p)
	if err == nil {
		err = i.f.w.Flush()
	}
	return n, err
}

// flusher empties the buffers every flushInterval until stop.
type flusher struct {
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func startFlusher(flush func()) *flusher {
	f := &flusher{done: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		t := time.NewTicker(flushInterval)
		defer t.Stop()
		for {
			select {
			case <-f.done:
				return
			case <-t.C:
				flush()
			}
		}
	}()
	return f
}

func (f *flusher) stop() {
	f.once.Do(func() { close(f.done); f.wg.Wait() })
}
