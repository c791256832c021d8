package engine

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// A connection found at start-up is told as of the moment its socket table
// was read; the ring can still hold records the kernel wrote before, its
// end among them (seen: stalled told 0.58 s after the final
// retransmit_timeout, the import having raced the close). Whatever the
// order, the story ends with the kernel's end and nothing is told after
// it; an import read before the end is told, in its place.
func TestImportRacingTheEnd(t *testing.T) {
	for _, readAfter := range []time.Duration{-580 * time.Millisecond, 0, 580 * time.Millisecond} {
		t.Run(readAfter.String(), func(t *testing.T) {
			now := wire.MonotonicNow()
			final := now - 2*time.Second // when the kernel gave up
			readAt := final + readAfter
			src := &fakeSource{}
			base := record(0, wire.KindRetransmit, server, 42)
			base.State, base.CAState, base.RTOMax = tcp.StateEstablished, tcp.CALoss, 120*time.Second
			base.Settings = tcp.Settings{Retries2: 3}
			mono := final - 3000*time.Millisecond
			for i, rto := range []int{200, 400, 800, 1600} {
				ev := base
				ev.Mono, ev.Retransmits, ev.RTO, ev.Flags = mono, uint8(i+1), time.Duration(rto)*time.Millisecond, wire.FlagFromTimer
				src.events = append(src.events, ev)
				mono += time.Duration(rto) * time.Millisecond
			}
			errEv := base
			errEv.Kind, errEv.Mono, errEv.Detail = wire.KindError, final, int32(unix.ETIMEDOUT)
			closeEv := base
			closeEv.Kind, closeEv.Mono, closeEv.OldState, closeEv.State = wire.KindState, final, tcp.StateEstablished, tcp.StateClose
			destroy := base
			destroy.Kind, destroy.Mono, destroy.State = wire.KindDestroy, final, tcp.StateClose
			src.events = append(src.events, errEv, closeEv, destroy)

			cfg := Config{ReconcileEvery: -1}
			e := New(src, cfg)
			e.existing = &existingRead{socks: []sockdiag.Socket{{Cookie: 42, NetNS: 1, Local: clientA, Remote: server,
				State: tcp.StateEstablished, Inode: 9, CAState: tcp.CALoss, Retransmits: 3, Backoff: 3,
				RTO: 1600 * time.Millisecond, RTOMax: 120 * time.Second, ReadAt: readAt, RetransmitArmed: true, RetransmitIn: 300 * time.Millisecond,
				Settings: tcp.Settings{Retries2: 3}}}}
			col := newCollector()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { e.Run(ctx, col); close(done) }()
			for deadline := time.Now().Add(5 * time.Second); src.Buffered() && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(3 * tickEvery)
			cancel()
			<-done
			got := col.Got()
			told := func(n tracker.Narrative) testkit.Told {
				return testkit.Told{Conn: n.Local.String(), Verdict: string(n.Verdict), Final: n.Final, Time: n.Time}
			}
			testkit.OneStory(t, "A", got, told)
			testkit.InTimeOrder(t, "A", got, told)
			if len(got) == 0 || got[len(got)-1].Verdict != tracker.RetransmitTimeout || !got[len(got)-1].Final {
				t.Errorf("the story does not end with the kernel's retransmit_timeout")
			}
			if _, ok := col.Find(func(n tracker.Narrative) bool { return n.Verdict == tracker.Stalled && n.Mono == readAt }); ok != (readAfter <= 0) {
				t.Errorf("the import's stalled line told: %v, want %v (read %v after the end)", ok, readAfter <= 0, readAfter)
			}
			if t.Failed() {
				for _, n := range got {
					t.Logf("%v final=%v at %v from the end", n.Verdict, n.Final, n.Mono-final)
				}
			}
		})
	}
}
