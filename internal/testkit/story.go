package testkit

import (
	"testing"
	"time"
)

// Told is what the story invariants need of one line tcpwatch told about
// a connection.
type Told struct {
	Conn    string    // the connection (its addresses; with the host when a test traces several)
	Verdict string    // as printed
	Final   bool      // the connection is gone
	Time    time.Time // when the kernel did what decided it
}

// OneStory checks the invariant every story obeys: per connection at
// most one final line, and nothing told about it after that. told says
// what each line is; where names the lines in a failure (a host, a
// recording).
func OneStory[T any](tb testing.TB, where string, lines []T, told func(T) Told) {
	tb.Helper()
	final := map[string]string{}
	for _, l := range lines {
		n := told(l)
		if v, done := final[n.Conn]; done {
			tb.Errorf("%s %s: %s (final=%v) told after the final %s", where, n.Conn, n.Verdict, n.Final, v)
			continue
		}
		if n.Final {
			final[n.Conn] = n.Verdict
		}
	}
}

// InTimeOrder checks that the lines were told in the order the kernel
// did what decided them.
func InTimeOrder[T any](tb testing.TB, where string, lines []T, told func(T) Told) {
	tb.Helper()
	var prev time.Time
	for _, l := range lines {
		n := told(l)
		if n.Time.Before(prev) {
			tb.Errorf("%s %s: %s at %v told after a line of %v", where, n.Conn, n.Verdict, n.Time, prev)
		}
		prev = n.Time
	}
}
