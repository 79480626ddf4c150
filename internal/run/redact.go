package run

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

// Redactor replaces secrets (passwords, tokens, key passphrases) wherever
// run output is written: logs, terminal and JSON.
type Redactor struct {
	mu      sync.RWMutex
	secrets []string
}

// Mask is what a secret is replaced with.
const Mask = "[REDACTED]"

// Add registers secrets; empty strings and very short ones (which would
// mangle ordinary output) are ignored.
func (r *Redactor) Add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range secrets {
		if len(s) >= 3 {
			r.secrets = append(r.secrets, s)
		}
	}
}

// String returns s with every secret masked.
func (r *Redactor) String(s string) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, Mask)
	}
	return s
}

// Writer wraps w so that complete lines are redacted before they reach it.
// Lines are the unit because a secret split across two writes would slip
// through a per-write replace.
func (r *Redactor) Writer(w io.Writer) *LineWriter {
	return &LineWriter{r: r, w: w}
}

// LineWriter buffers a partial line until its newline (or Flush).
type LineWriter struct {
	r   *Redactor
	w   io.Writer
	mu  sync.Mutex
	buf []byte
	// OnLine, if set, sees each redacted line (the live status uses it).
	OnLine func(line string)
}

func (l *LineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		if err := l.emit(string(l.buf[:i])); err != nil {
			return len(p), err
		}
		l.buf = l.buf[i+1:]
	}
	// A line without newline that grows without bound (progress bars) is
	// written in pieces; a secret is never that long.
	if len(l.buf) > 64<<10 {
		err := l.emit(string(l.buf))
		l.buf = l.buf[:0]
		return len(p), err
	}
	return len(p), nil
}

func (l *LineWriter) emit(line string) error {
	line = l.r.String(strings.TrimSuffix(line, "\r"))
	if l.OnLine != nil {
		l.OnLine(line)
	}
	_, err := io.WriteString(l.w, line+"\n")
	return err
}

// Flush writes a trailing partial line.
func (l *LineWriter) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) == 0 {
		return nil
	}
	err := l.emit(string(l.buf))
	l.buf = l.buf[:0]
	return err
}
