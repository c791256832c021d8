package tracker

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

func stuckSocket(cookie uint64, port uint16, pid uint32, held time.Duration) CloseWaitSocket {
	return CloseWaitSocket{Cookie: cookie, NetNS: 1, Local: netip.MustParseAddrPort("10.0.0.1:80"),
		Remote: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port),
		Owner:  Owner{PID: pid, Comm: "leaky", Source: wire.OwnerProcfs}, For: held}
}

// The scans find the stuck sockets; the process is told once, and ended
// by the kernel's record of its last socket leaving CLOSE_WAIT.
func TestCloseWaitStuckToldOnceAndEnded(t *testing.T) {
	var got []Narrative
	tr := New(Config{CloseWaitAfter: 10 * time.Second}, func(n *Narrative) { got = append(got, *n) })
	leave := func(at time.Duration, cookie uint64, port uint16, flags wire.Flags) {
		tr.Handle(&wire.Event{Kind: wire.KindState, Mono: at, Cookie: cookie, NetNS: 1, PID: 42, Owner: wire.OwnerClose,
			Local: netip.MustParseAddrPort("10.0.0.1:80"), Remote: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), port),
			OldState: tcp.StateCloseWait, State: tcp.StateLastAck, Flags: flags | wire.FlagCloseWaitStuck})
	}
	tr.CloseWaitScan(11*time.Second, []CloseWaitSocket{stuckSocket(1, 1001, 42, 10*time.Second)})
	tr.CloseWaitScan(12*time.Second, []CloseWaitSocket{stuckSocket(1, 1001, 42, 11*time.Second), stuckSocket(2, 1002, 42, 10*time.Second)})
	tr.Tick(14 * time.Second)
	if len(got) != 1 {
		t.Fatalf("%d narratives after the threshold, want 1: %+v", len(got), got)
	}
	if n := got[0]; n.Verdict != CloseWaitStuck || n.Final || !n.Begins || n.CloseWaitSockets != 1 ||
		n.CloseWaitFor != 10*time.Second || n.Owner.PID != 42 || n.State != tcp.StateCloseWait {
		t.Errorf("begin: %+v", n)
	}
	leave(20*time.Second, 1, 1001, 0)
	tr.Tick(21 * time.Second)
	if len(got) != 1 {
		t.Fatalf("told again while the process still holds one: %+v", got[1:])
	}
	leave(30*time.Second, 2, 1002, wire.FlagOwnerExiting)
	tr.Flush(31 * time.Second)
	if len(got) != 2 {
		t.Fatalf("%d narratives, want the begin and the end", len(got))
	}
	if n := got[1]; n.Verdict != CloseWaitStuck || !n.Final || n.CloseWaitSockets != 2 || !n.CloseWaitExited ||
		n.CloseWaitFor != 29*time.Second || n.State != tcp.StateLastAck {
		t.Errorf("end: %+v", n)
	}
	if tr.Stats().Tracked != 0 {
		t.Errorf("%d connections still tracked: those tracked for their CLOSE_WAIT only are forgotten once closed", tr.Stats().Tracked)
	}
}

// With --all every connection's way out of CLOSE_WAIT comes: only the
// marked ones (FlagCloseWaitStuck) are remembered as having left.
func TestCloseWaitOnlyMarkedSocketsRemembered(t *testing.T) {
	tr := New(Config{All: true}, func(*Narrative) {})
	tr.CloseWaitScan(time.Second, nil)
	for i := uint64(1); i <= 100; i++ {
		tr.Handle(&wire.Event{Kind: wire.KindState, Mono: 2 * time.Second, Cookie: i, NetNS: 1,
			Local: netip.MustParseAddrPort("10.0.0.1:80"), Remote: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), uint16(i)),
			OldState: tcp.StateCloseWait, State: tcp.StateLastAck})
	}
	if len(tr.cw.left) != 0 {
		t.Errorf("%d healthy sockets remembered", len(tr.cw.left))
	}
}

// A stuck socket whose end was not seen (its record lost) ends when a
// scan no longer finds it; a scan read before a socket's end, handed over
// after it, does not bring it back.
func TestCloseWaitEndedByScanAndNotRevived(t *testing.T) {
	var got []Narrative
	tr := New(Config{}, func(n *Narrative) { got = append(got, *n) })
	tr.CloseWaitScan(61*time.Second, []CloseWaitSocket{stuckSocket(1, 1001, 7, time.Minute)})
	tr.CloseWaitScan(91*time.Second, nil)
	tr.Handle(&wire.Event{Kind: wire.KindState, Mono: 95 * time.Second, Cookie: 2, NetNS: 1,
		Local: netip.MustParseAddrPort("10.0.0.1:80"), Remote: netip.MustParseAddrPort("10.0.0.2:1002"),
		OldState: tcp.StateCloseWait, State: tcp.StateLastAck, Flags: wire.FlagCloseWaitStuck})
	tr.CloseWaitScan(94*time.Second, []CloseWaitSocket{stuckSocket(2, 1002, 7, time.Minute)})
	tr.Flush(100 * time.Second)
	if len(got) != 2 || !got[0].Begins || !got[1].Final || got[1].CloseWaitFor != 90*time.Second || got[1].CloseWaitExited {
		t.Errorf("narratives: %+v", got)
	}
}

func TestCloseWaitNeverWhenOff(t *testing.T) {
	var got []Narrative
	tr := New(Config{CloseWaitAfter: -1}, func(n *Narrative) { got = append(got, *n) })
	tr.CloseWaitScan(time.Minute, []CloseWaitSocket{stuckSocket(1, 1001, 42, time.Minute)})
	tr.Flush(time.Hour)
	if len(got) != 0 {
		t.Errorf("told with the threshold off: %+v", got)
	}
}
