package stage

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// told is what the stage handed on: each narrative's verdict and
// incident, each incident record's phase.
type told struct {
	narratives []tracker.Verdict
	ids        []string
	incidents  []incident.Phase
}

// recorder is the sink after the stage: the test kit's, keeping what the
// tests look at (the stage reuses what it passes).
func recorder() *testkit.Recorder[*engine.Item, engine.Item] {
	return testkit.NewRecorder(func(it *engine.Item) (engine.Item, bool) {
		cp := engine.Item{}
		switch {
		case it.Narrative != nil:
			n := *it.Narrative
			cp.Narrative = &n
		case it.Incident != nil:
			in := *it.Incident
			cp.Incident = &in
		default:
			return cp, false
		}
		return cp, true
	})
}

func toldBy(rec *testkit.Recorder[*engine.Item, engine.Item]) *told {
	out := &told{}
	for _, it := range rec.Got() {
		if it.Narrative != nil {
			out.narratives = append(out.narratives, it.Narrative.Verdict)
			out.ids = append(out.ids, it.Narrative.Incident)
		} else {
			out.incidents = append(out.incidents, it.Incident.Phase)
		}
	}
	return out
}

// feed tells the stage about three connections to one peer: each stalls
// four times (RTO 0.2 .. 1.6 s), then recovers; then time passes.
func feed(t *testing.T, opts Options) *told {
	t.Helper()
	rec := recorder()
	s := New(opts)
	sink := s.Stage(rec)
	wall := time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC)
	peer := netip.MustParseAddrPort("10.0.0.5:5432")
	at := func(d time.Duration) *tracker.Narrative {
		return &tracker.Narrative{Time: wall.Add(d), Mono: d, NetNS: 1, Remote: peer, Owner: tracker.Owner{PID: 7, Comm: "app"}}
	}
	rtos := make([][]time.Duration, 3)
	for i, rto := 0, 200*time.Millisecond; i < 4; i, rto = i+1, rto*2 {
		for conn := 0; conn < 3; conn++ {
			rtos[conn] = append(rtos[conn], rto)
			n := at(time.Second + time.Duration(i)*time.Second + time.Duration(conn)*time.Millisecond)
			n.Local = netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+conn))
			n.Verdict, n.Begins, n.RTOs, n.Retransmits = tracker.Stalled, i == 0, append([]time.Duration(nil), rtos[conn]...), i+1
			if err := sink.Tell(&engine.Item{Narrative: n}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for conn := 0; conn < 3; conn++ {
		n := at(6 * time.Second)
		n.Local = netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+conn))
		n.Verdict = tracker.Recovered
		sink.Tell(&engine.Item{Narrative: n})
	}
	s.Model().Tick(30 * time.Second)
	return toldBy(rec)
}

func TestLinesFoldConnectionsIntoTheIncident(t *testing.T) {
	out := feed(t, Options{Telling: Lines})
	// The first connection's lines until the second joins (at 1.001 s):
	// its first stalled line; the rest are the incident's.
	if len(out.narratives) != 1 || out.ids[0] != "" {
		t.Errorf("narratives %v (incidents %q)", out.narratives, out.ids)
	}
	if len(out.incidents) < 2 || out.incidents[0] != incident.Open || out.incidents[len(out.incidents)-1] != incident.Close {
		t.Errorf("incident records %v", out.incidents)
	}
	all := feed(t, Options{Telling: Lines, Connections: true})
	if len(all.narratives) != 15 {
		t.Errorf("--connections: %d narratives, want all 15", len(all.narratives))
	}
}

func TestRecordsTellNewsOnly(t *testing.T) {
	out := feed(t, Options{Telling: Records})
	// Connection 0 alone: its first stalled, then (in the incident, once
	// the second joined) nothing until the end; 1 and 2 joined (listed in
	// the incident) and end. RTO 0.2 → 1.6 s crosses a class, but the
	// incident tells the class.
	want := []tracker.Verdict{tracker.Stalled, tracker.Recovered, tracker.Recovered, tracker.Recovered}
	if len(out.narratives) != len(want) {
		t.Fatalf("narratives %v, want %v", out.narratives, want)
	}
	for i, v := range want {
		if out.narratives[i] != v {
			t.Errorf("narrative %d: %s, want %s", i, out.narratives[i], v)
		}
	}
	if out.ids[1] == "" || out.ids[1] != out.ids[3] {
		t.Errorf("incident ids %q", out.ids)
	}
}

func TestLiveEverySecond(t *testing.T) {
	var got [][]incident.Live
	s := New(Options{Live: func(l []incident.Live) { got = append(got, l) }, LiveMembers: 10})
	s.Stage(recorder())
	for i := 0; i < 5; i++ {
		s.Flush()
	}
	if len(got) != 1 {
		t.Errorf("Live called %d times in five quick flushes, want once", len(got))
	}
}

// What the stage costs a healthy host: the engine flushes it at every
// tick and every drained ring; with no connection in trouble there is no
// incident to look at, and a healthy connection tells no narrative.
func BenchmarkFlushHealthy(b *testing.B) {
	s := New(Options{})
	s.Stage(recorder())
	b.ReportAllocs()
	for b.Loop() {
		s.Flush()
	}
}

// With --all, every normal end passes the stage: it must cost little.
func BenchmarkTellLifecycle(b *testing.B) {
	s := New(Options{Telling: Records})
	sink := s.Stage(engine.SinkFunc(func(*engine.Item) error { return nil }))
	n := &tracker.Narrative{Verdict: tracker.LocalClosed, Final: true, NetNS: 1,
		Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.5:5432")}
	it := &engine.Item{Narrative: n}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		n.Mono = time.Duration(i) * time.Microsecond
		sink.Tell(it)
	}
}
