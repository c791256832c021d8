package tracker

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

func TestCloseWaitStuckToldOnceAndEnded(t *testing.T) {
	var got []Narrative
	tr := New(Config{CloseWaitAfter: 10 * time.Second}, func(n *Narrative) { got = append(got, *n) })
	state := func(at time.Duration, cookie uint64, port uint16, old, new tcp.State, flags wire.Flags) {
		tr.Handle(&wire.Event{Kind: wire.KindState, Mono: at, Cookie: cookie, NetNS: 1, PID: 42, Owner: wire.OwnerClose,
			Local: netip.MustParseAddrPort("10.0.0.1:80"), Remote: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port),
			OldState: old, State: new, Flags: flags})
	}
	state(time.Second, 1, 1001, tcp.StateEstablished, tcp.StateCloseWait, 0)
	state(2*time.Second, 2, 1002, tcp.StateEstablished, tcp.StateCloseWait, 0)
	state(3*time.Second, 3, 1003, tcp.StateEstablished, tcp.StateCloseWait, 0)
	state(5*time.Second, 3, 1003, tcp.StateCloseWait, tcp.StateLastAck, 0) // closed in time: never stuck
	tr.Tick(11 * time.Second)                                              // the first crosses the threshold: told, with the one stuck so far
	tr.Tick(12*time.Second + time.Second)
	if len(got) != 1 {
		t.Fatalf("%d narratives after the threshold, want 1: %+v", len(got), got)
	}
	if n := got[0]; n.Verdict != CloseWaitStuck || n.Final || !n.Begins || n.CloseWaitSockets != 1 ||
		n.CloseWaitFor != 10*time.Second || n.Owner.PID != 42 {
		t.Errorf("begin: %+v", n)
	}
	state(20*time.Second, 1, 1001, tcp.StateCloseWait, tcp.StateLastAck, 0)
	tr.Tick(21 * time.Second)
	if len(got) != 1 {
		t.Fatalf("told again while the process still holds one: %+v", got[1:])
	}
	state(30*time.Second, 2, 1002, tcp.StateCloseWait, tcp.StateLastAck, wire.FlagOwnerExiting)
	tr.Flush(31 * time.Second)
	if len(got) != 2 {
		t.Fatalf("%d narratives, want the begin and the end", len(got))
	}
	if n := got[1]; n.Verdict != CloseWaitStuck || !n.Final || n.CloseWaitSockets != 2 || !n.CloseWaitExited || n.CloseWaitFor != 29*time.Second {
		t.Errorf("end: %+v", n)
	}
	if tr.Stats().Tracked != 0 {
		t.Errorf("%d connections still tracked: those tracked for their CLOSE_WAIT only are forgotten once closed", tr.Stats().Tracked)
	}
}

func TestCloseWaitNeverWhenOff(t *testing.T) {
	var got []Narrative
	tr := New(Config{CloseWaitAfter: -1}, func(n *Narrative) { got = append(got, *n) })
	tr.Handle(&wire.Event{Kind: wire.KindState, Mono: time.Second, Cookie: 1, NetNS: 1, PID: 42,
		Local: netip.MustParseAddrPort("10.0.0.1:80"), Remote: netip.MustParseAddrPort("10.0.0.2:1"),
		OldState: tcp.StateEstablished, State: tcp.StateCloseWait})
	tr.Flush(time.Hour)
	if len(got) != 0 {
		t.Errorf("told with the threshold off: %+v", got)
	}
}
