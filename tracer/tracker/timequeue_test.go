package tracker

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// The queue gives what a stable sort by time of everything pushed gives,
// whatever the order of the pushes and of the takes.
func TestTimeQueueIsAStableSort(t *testing.T) {
	type item struct {
		at  time.Duration
		seq int
	}
	r := rand.New(rand.NewPCG(1, 2))
	var q timeQueue[int]
	var ref []item // what is still queued, in push order
	var got []int
	seq := 0
	now := time.Duration(0)
	for round := 0; round < 20000; round++ {
		switch r.IntN(4) {
		case 0, 1:
			// Mostly in order, sometimes late, sometimes equal times.
			now += time.Duration(r.IntN(3))
			at := now - time.Duration(r.IntN(2)*r.IntN(5))
			q.Push(at, seq)
			ref = append(ref, item{at, seq})
			seq++
		case 2:
			slices.SortStableFunc(ref, func(a, b item) int { return int(a.at - b.at) })
			at, v, ok := q.Front()
			if ok != (len(ref) > 0) {
				t.Fatalf("round %d: Front ok=%v with %d queued", round, ok, len(ref))
			}
			if !ok {
				continue
			}
			if at != ref[0].at || v != ref[0].seq {
				t.Fatalf("round %d: Front = (%v, %d), want (%v, %d)", round, at, v, ref[0].at, ref[0].seq)
			}
			q.Pop()
			got = append(got, v)
			ref = ref[1:]
		case 3:
			if q.Len() != len(ref) {
				t.Fatalf("round %d: Len = %d, want %d", round, q.Len(), len(ref))
			}
		}
	}
	if len(got) == 0 {
		t.Fatal("nothing taken")
	}
}

// Connection churn with --all, one connection's life per iteration (the
// client end of a connection the server closes first, five state changes
// and the destroy, a record every 2 µs): the narratives and the closing
// connections of the last 50 ms (hundreds) wait in the tracker's queues
// for the grace period. Sorting the whole queue at every record made this
// cost tens of µs per connection; it must stay at a few µs (issue #11).
func BenchmarkChurnAll(b *testing.B) {
	told := 0
	tr := New(Config{All: true, MaxConns: 1 << 16}, func(*Narrative) { told++ })
	steps := []struct{ old, new tcp.State }{
		{tcp.StateClose, tcp.StateSynSent},
		{tcp.StateSynSent, tcp.StateEstablished},
		{tcp.StateEstablished, tcp.StateCloseWait},
		{tcp.StateCloseWait, tcp.StateLastAck},
		{tcp.StateLastAck, tcp.StateClose},
	}
	remote := netip.MustParseAddrPort("127.0.0.1:8080")
	var ev wire.Event
	mono := time.Duration(0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev = wire.Event{Cookie: uint64(i + 1), PID: 1234, Local: netip.AddrPortFrom(remote.Addr(), uint16(10000+i%50000)),
			Remote: remote}
		for _, s := range steps {
			mono += 2 * time.Microsecond
			ev.Kind, ev.OldState, ev.State, ev.Mono = wire.KindState, s.old, s.new, mono
			tr.Handle(&ev)
		}
		mono += 2 * time.Microsecond
		ev.Kind, ev.Mono = wire.KindDestroy, mono
		tr.Handle(&ev)
	}
	if told == 0 {
		b.Fatal("no narrative told")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/connection")
}
