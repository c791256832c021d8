package engine

import (
	"context"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// push writes evs behind the gate: the reader is held before the first of
// them until the gate is closed.
func (s *fakeSource) push(gate chan struct{}, evs ...wire.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before = func(int) { <-gate }
	s.events = append(s.events, evs...)
}

// goneCookie is a socket table without one socket.
type goneCookie uint64

func (g goneCookie) Has(_ uint32, cookie uint64, _, _ netip.AddrPort) bool {
	return cookie != uint64(g)
}

// A connection that dies while the socket table is read is missing from
// the table, and its CLOSE and error records are dated after the reading
// began. Under load (2,000 connections timing out together, a reading of
// tens of milliseconds, a reader behind the ring) the table came back
// while those records still waited unread: it was applied as soon as the
// loop read any record 20 ms past the reading's start, and the connection
// was told untold ("kernel records were lost", with none lost), its end
// read next as a second story. The table must wait until the loop has
// read past the reading's end.
//
// The records are firewall-drops-replies' (a lab recording): A's client
// stalls while its firewall drops B's answers, and the kernel gives up.
func TestReconcileWaitsForEndsWrittenWhileTheTableWasRead(t *testing.T) {
	f, err := os.Open("../tracker/testdata/firewall-drops-replies.hex")
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := wire.ReadRecording(f, time.Now())
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The story up to the kernel's giving up; its CLOSE and error later.
	closeAt := -1
	for i, ev := range recorded {
		if ev.Kind == wire.KindState && ev.State == tcp.StateClose && ev.SkErr != 0 {
			closeAt = i
			break
		}
	}
	if closeAt < 1 || closeAt+2 > len(recorded) || recorded[closeAt+1].Kind != wire.KindError {
		t.Fatalf("the recording has no CLOSE with an error followed by the error report (at %d)", closeAt)
	}
	before, ends := recorded[:closeAt], recorded[closeAt:closeAt+2]
	a := ends[0]
	var lastDrop wire.Event
	for _, ev := range before {
		if ev.Kind == wire.KindDrop && ev.Cookie == a.Cookie {
			lastDrop = ev
		}
	}
	if lastDrop.Kind != wire.KindDrop {
		t.Fatal("the recording has no drop of A's packets")
	}
	shift := wire.MonotonicNow() - 50*time.Millisecond - before[len(before)-1].Mono
	for i := range before {
		before[i].Mono += shift
		before[i].Time = before[i].Time.Add(shift)
	}

	src := &fakeSource{events: before}
	started, finish := make(chan time.Duration, 1), make(chan struct{})
	var once sync.Once
	cfg := Config{NoExisting: true, ReconcileEvery: 50 * time.Millisecond,
		LiveTable: func([]uint32) (Alive, error) {
			first := false
			once.Do(func() { first = true })
			if first {
				started <- wire.MonotonicNow()
				<-finish // a slow reading, during which A dies
			}
			return goneCookie(a.Cookie), nil
		}}
	e := New(src, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	col := newCollector()
	done := make(chan error, 1)
	go func() { _, err := e.Run(ctx, col); done <- err }()

	var m time.Duration
	select {
	case m = <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the socket table was never read")
	}
	// A's end is written while the table is read: a drop of its packets
	// 30 ms into the reading, its CLOSE and error 10 ms later. The reader
	// is behind them.
	time.Sleep(60 * time.Millisecond)
	at := func(ev wire.Event, mono time.Duration) wire.Event {
		ev.Time = ev.Time.Add(mono - ev.Mono)
		ev.Mono = mono
		return ev
	}
	gate := make(chan struct{})
	src.push(gate, at(lastDrop, m+30*time.Millisecond), at(ends[0], m+40*time.Millisecond),
		at(ends[1], m+40*time.Millisecond+20*time.Microsecond))
	close(finish)
	time.Sleep(50 * time.Millisecond) // the table is handed to the loop, held in Read
	close(gate)
	deadline := time.Now().Add(5 * time.Second)
	for src.Buffered() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(5 * tickEvery) // the grace, and the next reconciliation
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	var told []tracker.Verdict
	for _, n := range col.Got() {
		if n.Local == a.Local {
			told = append(told, n.Verdict)
		}
	}
	if len(told) == 0 || told[len(told)-1] != tracker.RetransmitTimeout {
		t.Fatalf("A told %v, want its end retransmit_timeout", told)
	}
	for _, v := range told {
		if v == tracker.Untold {
			t.Fatalf("A told %v: untold although its end was read right after the table", told)
		}
	}
}
