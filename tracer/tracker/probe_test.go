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
