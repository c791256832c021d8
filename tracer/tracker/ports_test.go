package tracker

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Failed connect()s for want of a port: the first is told at once, the
// next ones of the same owner to the same destination are folded for
// portsFold and told together.
func TestLocalPortsExhaustedFolds(t *testing.T) {
	var got []Narrative
	tr := New(Config{}, func(n *Narrative) { got = append(got, *n) })
	fail := func(at time.Duration, cookie uint64) {
		ev := wire.Event{Kind: wire.KindState, Mono: at, Cookie: cookie, NetNS: 1, PID: 7,
			Local: netip.MustParseAddrPort("10.0.0.1:0"), Remote: netip.MustParseAddrPort("10.0.0.2:6379")}
		ev.OldState, ev.State = tcp.StateClose, tcp.StateSynSent
		tr.Handle(&ev)
		ev.OldState, ev.State, ev.Flags = tcp.StateSynSent, tcp.StateClose, wire.FlagNoLocalPort
		tr.Handle(&ev)
	}
	for i := 0; i < 5; i++ {
		fail(time.Second+time.Duration(i)*time.Millisecond, uint64(10+i))
	}
	tr.Tick(2 * time.Second)
	if len(got) != 1 || got[0].Verdict != LocalPortsExhausted || got[0].Ports.Failures != 1 || got[0].Errno != 99 {
		t.Fatalf("after the first failures: %+v", got)
	}
	tr.Tick(12 * time.Second)
	tr.Tick(12*time.Second + 100*time.Millisecond) // told after the grace
	if len(got) != 2 || got[1].Ports.Failures != 4 || got[1].Owner.PID != 7 || got[1].Remote.Port() != 6379 {
		t.Fatalf("after the fold: %+v", got)
	}
	fail(13*time.Second, 99)
	tr.Flush(14 * time.Second)
	if len(got) != 3 || got[2].Ports.Failures != 1 {
		t.Errorf("a failure after the fold is told at once: %+v", got[2:])
	}
}
