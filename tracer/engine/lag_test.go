package engine

import (
	"context"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// lateSource hands out records that were written a while ago, as a ring
// buffer does when its reader lags (a busy host, qemu TCG), and stalls
// before one of them long enough for the loop's clock tick to come due
// right after it.
type lateSource struct {
	mu       sync.Mutex
	events   []wire.Event
	stallAt  int
	stall    time.Duration
	deadline time.Time
	stopped  bool
}

func (s *lateSource) Read(ev *wire.Event) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return tracer.ErrClosed
	}
	if len(s.events) == 0 {
		deadline := s.deadline
		s.mu.Unlock()
		time.Sleep(time.Until(deadline))
		return os.ErrDeadlineExceeded
	}
	if s.stallAt == 0 {
		s.mu.Unlock()
		time.Sleep(s.stall)
		s.mu.Lock()
	}
	s.stallAt--
	*ev = s.events[0]
	s.events = s.events[1:]
	s.mu.Unlock()
	return nil
}

func (s *lateSource) SetDeadline(d time.Time) { s.mu.Lock(); s.deadline = d; s.mu.Unlock() }
func (s *lateSource) Buffered() bool          { s.mu.Lock(); defer s.mu.Unlock(); return len(s.events) > 0 }
func (s *lateSource) Losses() (tracer.Losses, error) {
	return tracer.Losses{}, nil
}
func (s *lateSource) Stop() error                    { s.mu.Lock(); s.stopped = true; s.mu.Unlock(); return nil }
func (s *lateSource) ResetReasons() tcp.ResetReasons { return tcp.FallbackResetReasons }

// A connection closed with SO_LINGER 0 sends its reset right after its
// CLOSE. When the reader lags a second behind the kernel and the clock
// ticks between those two records, the verdict must still wait for the
// reset: the clock only speaks for records already read. Seen in the
// kernel matrix under qemu: local_abort never told.
func TestLaggingReaderKeepsTheGrace(t *testing.T) {
	local := netip.MustParseAddrPort("198.18.1.1:40000")
	remote := netip.MustParseAddrPort("198.18.1.2:8080")
	base := wire.MonotonicNow() - time.Second
	ev := func(ms int, kind wire.Kind, old, state tcp.State) wire.Event {
		return wire.Event{Mono: base + time.Duration(ms)*time.Millisecond, Kind: kind, Cookie: 87, NetNS: 1,
			Local: local, Remote: remote, PID: 812, Owner: wire.OwnerConnect, OldState: old, State: state}
	}
	reset := ev(5, wire.KindSendReset, 0, tcp.StateClose)
	reset.Detail = 11
	src := &lateSource{events: []wire.Event{
		ev(0, wire.KindState, tcp.StateSynSent, tcp.StateEstablished),
		ev(600, wire.KindState, tcp.StateEstablished, tcp.StateClose),
		func() wire.Event { r := reset; r.Mono += 600 * time.Millisecond; return r }(),
		ev(606, wire.KindDestroy, 0, tcp.StateClose),
	}, stallAt: 1, stall: 3 * tickEvery / 2}
	e := New(src, Config{NoExisting: true, ReconcileEvery: -1})
	ctx, cancel := context.WithCancel(context.Background())
	col := newCollector()
	done := make(chan error, 1)
	go func() { _, err := e.Run(ctx, col); done <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !src.drained() {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * tickEvery)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := col.Got()
	if len(got) != 1 || got[0].Verdict != tracker.LocalAbort {
		var vs []tracker.Verdict
		for _, n := range got {
			vs = append(vs, n.Verdict)
		}
		t.Fatalf("told %v, want one local_abort", vs)
	}
}

func (s *lateSource) drained() bool { return !s.Buffered() }

// Memory goes back after a burst, once: when the tracker holds under a
// quarter of a peak of a few thousand connections, or when a flood of
// records has been followed by a quiet second; never for small ones.
func TestMemoryReturnAfterBurst(t *testing.T) {
	t0 := time.Now()
	released := 0
	m := memoryReturn{release: func() { released++ }}
	m.afterTick(returnAfterPeak, 0, t0)
	if m.afterTick(returnAfterPeak/2, 0, t0) || released != 0 {
		t.Fatalf("returned at half the peak (released %d)", released)
	}
	if !m.afterTick(returnAfterPeak/4-1, 0, t0) || released != 1 {
		t.Fatalf("not returned under a quarter of a %d-connection peak (released %d)", returnAfterPeak, released)
	}
	var small memoryReturn
	small.afterTick(returnAfterPeak-1, 0, t0)
	if small.afterTick(0, 0, t0) {
		t.Fatalf("returned after a burst of %d connections, below the threshold", returnAfterPeak-1)
	}

	var flood memoryReturn
	flood.afterTick(0, 0, t0)
	flood.afterTick(0, returnAfterRecords, t0.Add(time.Second))
	if flood.afterTick(0, returnAfterRecords, t0.Add(time.Second+quietBeforeReturn/2)) {
		t.Fatal("returned while records were still coming")
	}
	if !flood.afterTick(0, returnAfterRecords, t0.Add(time.Second+quietBeforeReturn)) {
		t.Fatalf("not returned a quiet %v after %d records", quietBeforeReturn, returnAfterRecords)
	}
	if flood.afterTick(0, returnAfterRecords, t0.Add(time.Minute)) {
		t.Fatal("returned twice for one flood")
	}
	var trickle memoryReturn
	trickle.afterTick(0, 0, t0)
	trickle.afterTick(0, returnAfterRecords-1, t0.Add(time.Second))
	if trickle.afterTick(0, returnAfterRecords-1, t0.Add(time.Minute)) {
		t.Fatalf("returned after %d records, below the threshold", returnAfterRecords-1)
	}
}
