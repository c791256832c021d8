package engine

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// fakeSource hands out its records at once, then waits for the deadline
// like a quiet ring; the kernel's loss counters are whatever the test sets.
// before, when set, runs before the record numbered read (from 0) is handed
// out, the source unlocked: a reader that lags behind the ring.
type fakeSource struct {
	mu       sync.Mutex
	events   []wire.Event
	deadline time.Time
	stopped  bool
	losses   tracer.Losses
	before   func(read int)
	read     int
}

func (s *fakeSource) Read(ev *wire.Event) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return tracer.ErrClosed
	}
	if len(s.events) == 0 {
		deadline := s.deadline
		s.mu.Unlock()
		time.Sleep(min(time.Until(deadline), 10*time.Millisecond))
		return os.ErrDeadlineExceeded
	}
	if before, n := s.before, s.read; before != nil {
		s.mu.Unlock()
		before(n)
		s.mu.Lock()
	}
	s.read++
	*ev = s.events[0]
	s.events = s.events[1:]
	s.mu.Unlock()
	return nil
}

// drained says whether every record has been handed out.
func (s *fakeSource) drained() bool { return !s.Buffered() }

func (s *fakeSource) SetDeadline(d time.Time)        { s.mu.Lock(); s.deadline = d; s.mu.Unlock() }
func (s *fakeSource) Buffered() bool                 { s.mu.Lock(); defer s.mu.Unlock(); return len(s.events) > 0 }
func (s *fakeSource) Stop() error                    { s.mu.Lock(); s.stopped = true; s.mu.Unlock(); return nil }
func (s *fakeSource) ResetReasons() tcp.ResetReasons { return testReasons }
func (s *fakeSource) Losses() (tracer.Losses, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.losses, nil
}

var testReasons = tcp.ResetReasons{8: "TCP_ABORT_ON_DATA"}

// items keeps copies of what it is told (the engine reuses an Item).
type items = testkit.Recorder[*Item, Item]

func newItems() *items {
	return testkit.NewRecorder(func(it *Item) (Item, bool) {
		cp := *it
		switch {
		case it.Narrative != nil:
			n := *it.Narrative
			n.Timeline = slices.Clone(n.Timeline) // the tracker reuses its array
			cp.Narrative = &n
		case it.Event != nil:
			ev := *it.Event
			cp.Event = &ev
		case it.Notice != nil:
			n := *it.Notice
			cp.Notice = &n
		case it.Loss != nil:
			l := *it.Loss
			cp.Loss = &l
		}
		return cp, true
	})
}

// tap is a stage: it keeps what passes and hands everything on.
type tap struct {
	seen *items
	next Sink
}

func (s *tap) Tell(it *Item) error { s.seen.Tell(it); return s.next.Tell(it) }
func (s *tap) Flush() error        { return s.next.Flush() }

// run drives an engine over src until every record is read and a few
// ticks have passed.
func run(t *testing.T, src *fakeSource, cfg Config, sink Sink) Stats {
	t.Helper()
	cfg.NoExisting, cfg.ReconcileEvery = true, -1
	e := New(src, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var stats Stats
	var err error
	go func() { stats, err = e.Run(ctx, sink); close(done) }()
	for deadline := time.Now().Add(5 * time.Second); src.Buffered() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * tickEvery)
	cancel()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	return stats
}

var (
	clientA = netip.MustParseAddrPort("198.18.1.1:40000")
	server  = netip.MustParseAddrPort("198.18.1.2:8080")
	other   = netip.MustParseAddrPort("198.18.1.2:9090")
)

func record(mono time.Duration, kind wire.Kind, remote netip.AddrPort, cookie uint64) wire.Event {
	ev := wire.Event{Mono: mono, Kind: kind, Cookie: cookie, NetNS: 1, Local: clientA, Remote: remote,
		PID: 812, Owner: wire.OwnerConnect, CgroupID: 77}
	ev.SetComm("client")
	return ev
}

// With --events every record read is told as it is, once, through the
// filter, with the kernel's reset reasons; stages in front of the last
// sink see exactly what it sees.
func TestEventsModeTellsEachRecordOnceThroughStages(t *testing.T) {
	base := wire.MonotonicNow() - time.Second
	src := &fakeSource{}
	for i := range 6 {
		remote := server
		if i%2 == 1 {
			remote = other
		}
		ev := record(base+time.Duration(i)*time.Millisecond, wire.KindSendReset, remote, uint64(100+i))
		ev.Detail = 8
		src.events = append(src.events, ev)
	}
	front, last := newItems(), newItems()
	stage := func(next Sink) Sink { return &tap{front, next} }
	stats := run(t, src, Config{Mode: ModeEvents, Filter: Filter{Port: server.Port()}}, Chain(last, stage))
	if stats.Events != 6 {
		t.Errorf("read %d records, want 6", stats.Events)
	}
	got := last.Got()
	if len(got) != 3 || len(front.Got()) != 3 {
		t.Fatalf("told %d items (the stage saw %d), want the 3 to port %d", len(got), len(front.Got()), server.Port())
	}
	for i, it := range got {
		if it.Event == nil || it.Event.Remote != server || it.Event.Cookie != uint64(100+2*i) {
			t.Errorf("item %d: %+v", i, it.Event)
		}
		if it.ResetReasons.Name(it.Event.Detail) != "TCP_ABORT_ON_DATA" {
			t.Errorf("item %d: reset reason %q, want the source's name", i, it.ResetReasons.Name(it.Event.Detail))
		}
	}
	if last.Flushes() == 0 {
		t.Error("the last sink was never flushed through the stage")
	}
}

// Losses reach the sink as they grow, whatever the filter, and the
// stats (the observed ones too) count them by cause.
func TestLossesAreTold(t *testing.T) {
	src := &fakeSource{losses: tracer.Losses{RingFull: 5, Recursion: 2}}
	sink := newItems()
	var observed []Stats
	stats := run(t, src, Config{Filter: Filter{PID: 1}, Observe: func(s Stats) { observed = append(observed, s) }}, sink)
	if len(observed) == 0 {
		t.Fatal("Observe was never told the run's stats")
	}
	if last := observed[len(observed)-1]; last.Lost != 7 || last.RingFull != 5 || last.Recursion != 2 {
		t.Errorf("last observed stats %+v, want lost 7 = 5 ring full + 2 recursion", last)
	}
	var losses []Loss
	for _, it := range sink.Got() {
		if it.Loss != nil {
			losses = append(losses, *it.Loss)
		}
	}
	if len(losses) != 1 || losses[0] != (Loss{Total: 7, New: 7, RingFull: 5, Recursion: 2}) || stats.Lost != 7 {
		t.Errorf("losses told %+v, stats.Lost %d; want one report of 7 (5 ring full, 2 recursion)", losses, stats.Lost)
	}
}

// The kernel's skips for want of room reach the sink as they grow, in a
// loss report of their own (no record lost), and the stats count them
// apart from lost.
func TestSkipsAreTold(t *testing.T) {
	skipped := tracer.Skipped{NoStorage: 3, TroubledFull: 2, KeepaliveFull: 1}
	src := &fakeSource{losses: tracer.Losses{Skipped: skipped}}
	sink := newItems()
	var observed []Stats
	stats := run(t, src, Config{Observe: func(s Stats) { observed = append(observed, s) }}, sink)
	if len(observed) == 0 || observed[len(observed)-1].Skipped != skipped || stats.Skipped != skipped || stats.Lost != 0 {
		t.Errorf("stats %+v (observed %d times), want skipped %+v and nothing lost", stats, len(observed), skipped)
	}
	var losses []Loss
	for _, it := range sink.Got() {
		if it.Loss != nil {
			losses = append(losses, *it.Loss)
		}
	}
	if want := (Loss{Skipped: skipped, NewSkipped: 6}); len(losses) != 1 || losses[0] != want {
		t.Errorf("losses told %+v, want one report %+v", losses, want)
	}
}

// In the default mode a failure is narrated, counted in the stats by
// verdict, and an answered keepalive probe is not told; with --all it is,
// and so are normal lifecycles.
func TestModes(t *testing.T) {
	base := wire.MonotonicNow() - time.Second
	story := func() []wire.Event {
		at := func(ms int) time.Duration { return base + time.Duration(ms)*time.Millisecond }
		open := record(at(0), wire.KindState, server, 1)
		open.OldState, open.State = tcp.StateSynSent, tcp.StateEstablished
		probe := record(at(10), wire.KindKeepalive, server, 1)
		probe.Flags = wire.FlagProbeAnswered
		probe.State = tcp.StateEstablished
		closed := record(at(20), wire.KindState, server, 1)
		closed.OldState, closed.State = tcp.StateEstablished, tcp.StateFinWait1
		finWait2 := record(at(21), wire.KindState, server, 1)
		finWait2.OldState, finWait2.State = tcp.StateFinWait1, tcp.StateFinWait2
		timeWait := record(at(22), wire.KindState, server, 1)
		timeWait.OldState, timeWait.State = tcp.StateFinWait2, tcp.StateClose
		destroy := record(at(23), wire.KindDestroy, server, 1)
		destroy.State = tcp.StateClose
		refused := record(at(30), wire.KindState, other, 2)
		refused.OldState, refused.State = 0, tcp.StateSynSent
		reset := record(at(31), wire.KindRecvReset, other, 2)
		reset.State = tcp.StateSynSent
		gone := record(at(32), wire.KindState, other, 2)
		gone.OldState, gone.State = tcp.StateSynSent, tcp.StateClose
		gone.SkErr = int32(111)
		return []wire.Event{open, probe, closed, finWait2, timeWait, destroy, refused, reset, gone}
	}
	for _, tc := range []struct {
		mode        Mode
		probesTold  int
		lifecycles  bool
		wantRefused bool
	}{
		{ModeDefault, 0, false, true},
		{ModeRoutine, 1, false, true},
		{ModeAll, 1, true, true},
	} {
		sink := newItems()
		stats := run(t, &fakeSource{events: story()}, Config{Mode: tc.mode}, sink)
		probes, lifecycles := 0, false
		for _, it := range sink.Got() {
			if it.Event != nil && it.Event.Kind == wire.KindKeepalive {
				probes++
			}
			if n := it.Narrative; n != nil && (n.Verdict == tracker.LocalClosed || n.Verdict == tracker.PeerClosed) {
				lifecycles = true
			}
		}
		if probes != tc.probesTold || lifecycles != tc.lifecycles || (stats.Narratives["connect_refused"] == 1) != tc.wantRefused {
			t.Errorf("mode %d: %d answered probes told, lifecycles narrated %v, stats %v; want %d, %v, one connect_refused",
				tc.mode, probes, lifecycles, stats.Narratives, tc.probesTold, tc.lifecycles)
		}
	}
}
