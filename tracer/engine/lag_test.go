package engine

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

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
	// The reader stalls before the second record long enough for the
	// loop's clock tick to come due right after it, as a ring buffer's
	// reader that lags (a busy host, qemu TCG).
	src := &fakeSource{events: []wire.Event{
		ev(0, wire.KindState, tcp.StateSynSent, tcp.StateEstablished),
		ev(600, wire.KindState, tcp.StateEstablished, tcp.StateClose),
		func() wire.Event { r := reset; r.Mono += 600 * time.Millisecond; return r }(),
		ev(606, wire.KindDestroy, 0, tcp.StateClose),
	}, before: func(read int) {
		if read == 1 {
			time.Sleep(3 * tickEvery / 2)
		}
	}}
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
