package ssh

import "testing"

func TestLiveness(t *testing.T) {
	// Each event: "a" a probe answered, "m" a probe unanswered; the number
	// is the bytes received so far when the event happens.
	type event struct {
		kind string
		read int64
	}
	tests := []struct {
		name   string
		events []event
		deadAt int // index of the event that gives up; -1: never
	}{
		{"silent peer: the third unanswered probe gives up", []event{{"m", 0}, {"m", 0}, {"m", 0}}, 2},
		{"busy peer still sending data is kept", []event{{"m", 10}, {"m", 20}, {"m", 30}, {"m", 40}, {"m", 50}}, -1},
		{"data stops: three more misses from then on", []event{{"m", 10}, {"m", 20}, {"m", 20}, {"m", 20}, {"m", 20}}, 4},
		{"an answer resets the count", []event{{"m", 0}, {"m", 0}, {"a", 5}, {"m", 5}, {"m", 5}, {"m", 5}}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var read int64
			l := liveness{read: func() int64 { return read }}
			for i, e := range tt.events {
				read = e.read
				dead := false
				if e.kind == "a" {
					l.answered()
				} else {
					dead = l.unanswered()
				}
				if dead != (i == tt.deadAt) {
					t.Fatalf("event %d (%s at %d bytes): gave up %v, want gave up at event %d", i, e.kind, e.read, dead, tt.deadAt)
				}
				if dead {
					return
				}
			}
		})
	}
}
