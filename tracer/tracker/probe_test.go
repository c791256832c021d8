package tracker

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// A zero-window episode whose window opens: the peer's window update
// cancels the probe timer (tcp_ack_probe) without any record, so the end
// is the timer's silence past its next due expiry. It is told as
// recovered, once, and Flush does not tell the episode again.
func TestZeroWindowEndsWhenTheProbeTimerStops(t *testing.T) {
	var got []Narrative
	tr := New(Config{DropsSeen: true}, func(n *Narrative) { got = append(got, *n) })
	probe := func(at time.Duration, before, after, backoff uint8) {
		tr.Handle(&wire.Event{Mono: at, Kind: wire.KindProbe0, Cookie: 7, NetNS: 1, State: tcp.StateEstablished,
			Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.2:80"),
			ProbesBefore: before, ProbesOut: after, Backoff: backoff, RTO: 200 * time.Millisecond,
			RTOMax: 120 * time.Second, NotSent: 5000, Settings: tcp.Settings{Retries2: 15}})
	}
	s := time.Second
	probe(10*s, 0, 1, 1)                      // first probe
	probe(10*s+400*time.Millisecond, 0, 1, 2) // the first was answered: closed window
	probe(11*s+200*time.Millisecond, 0, 1, 3) // answered again; next due 1.6 s later
	tr.Tick(12 * s)
	if len(got) != 2 || got[0].Verdict != ZeroWindow || !got[0].Begins || got[1].Begins || !got[1].Endless ||
		got[1].ProbesAnswered != 2 || got[1].NotSent != 5000 {
		t.Fatalf("during the episode: %+v", got)
	}
	tr.Tick(13 * s) // the next probe is due at 12.8 s: still within its slack
	if len(got) != 2 {
		t.Fatalf("ended too early: %+v", got[len(got)-1])
	}
	tr.Tick(16 * s)
	tr.Tick(16*s + 100*time.Millisecond) // past the grace
	if len(got) != 3 || got[2].Verdict != Recovered || got[2].WindowProbes != 3 {
		t.Fatalf("end: %+v", got[len(got)-1])
	}
	tr.Flush(17 * s)
	if len(got) != 3 {
		t.Fatalf("told again at flush: %v", got[3].Verdict)
	}
}

// Unanswered probes: the give-up is the expiry that finds icsk_probes_out
// at tcp_retries2, after the remaining doubling intervals.
func TestWindowProbeGiveUpProjection(t *testing.T) {
	var got []Narrative
	tr := New(Config{}, func(n *Narrative) { got = append(got, *n) })
	for i, at := range []time.Duration{200 * time.Millisecond, 600 * time.Millisecond} {
		tr.Handle(&wire.Event{Mono: at, Kind: wire.KindProbe0, Cookie: 9, NetNS: 1, State: tcp.StateEstablished,
			Local: netip.MustParseAddrPort("10.0.0.1:40001"), Remote: netip.MustParseAddrPort("10.0.0.2:80"),
			ProbesBefore: uint8(i), ProbesOut: uint8(i + 1), Backoff: uint8(i + 1), RTO: 200 * time.Millisecond,
			RTOMax: 120 * time.Second, SndWnd: 65535, Settings: tcp.Settings{Retries2: 3}})
	}
	tr.Flush(time.Second)
	if len(got) == 0 || got[0].Verdict != Stalled {
		t.Fatalf("%+v", got)
	}
	// After probe 2 at 0.6 s: probe 3 at +0.8 s (1.4 s), the kill at +1.6 s (3.0 s).
	if n := got[0]; n.GiveUpIn != 2400*time.Millisecond || n.Budget.Setting != "tcp_retries2" {
		t.Errorf("give up in %v, budget %+v", n.GiveUpIn, n.Budget)
	}
}

// A listener's accept queue, read once a second: drops that grow while
// the queue is full are one accept_queue_overflow, told again only after
// 10 s; a listener found already overflowing is told at its first reading.
func TestAcceptQueueOverflowOncePerListener(t *testing.T) {
	var got []Narrative
	tr := New(Config{}, func(n *Narrative) { got = append(got, *n) })
	l := netip.MustParseAddrPort("10.0.0.1:443")
	read := func(at time.Duration, queue, drops uint32) {
		tr.ListenerQueues(at, []ListenerQueue{{NetNS: 1, Local: l, Inode: 99, Queue: queue, Limit: 4, Drops: drops}})
		tr.Tick(at + 100*time.Millisecond)
	}
	s := time.Second
	read(1*s, 2, 0) // baseline
	read(2*s, 5, 6)
	read(3*s, 5, 20)
	read(4*s, 5, 31)
	if len(got) != 1 || got[0].Verdict != AcceptQueueOverflow || got[0].TurnedAway != 6 || got[0].QueueLen != 5 ||
		got[0].QueueLimit != 4 || got[0].Outage != time.Second || !got[0].Begins {
		t.Fatalf("after 4 readings: %+v", got)
	}
	read(13*s, 5, 40)
	if len(got) != 2 || got[1].TurnedAway != 40 || got[1].Begins || got[1].Outage != 12*s {
		t.Fatalf("10 s later: %+v", got[len(got)-1])
	}
	// Another listener, overflowing before it was ever read.
	tr.ListenerQueues(14*s, []ListenerQueue{{NetNS: 2, Local: l, Inode: 7, Queue: 3, Limit: 2, Drops: 9}})
	tr.Tick(14*s + 100*time.Millisecond)
	if len(got) != 3 || got[2].TurnedAway != 9 || got[2].NetNS != 2 {
		t.Fatalf("first reading overflowing: %+v", got[len(got)-1])
	}
}
