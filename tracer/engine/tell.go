package engine

import (
	"net/netip"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Item is one thing the engine tells: exactly one of Narrative, Notice,
// Event, Loss and Incident is set. The engine reuses what the pointers point to: a
// sink that keeps an item beyond Tell copies it, and a narrative's Timeline
// with it (the tracker reuses the array: tracker.Config.ReuseNarratives).
type Item struct {
	Narrative *tracker.Narrative
	Notice    *tracker.Notice // with --all: TIME_WAIT reuse
	Event     *wire.Event     // with --events every record; with --all answered keepalive probes
	Loss      *Loss           // records the kernel could not deliver, as they happen
	// Incident is an incident's record (two or more connections in
	// trouble with one peer): told by the incident stage, not the engine.
	Incident *incident.Incident

	// Filled by the engine (enrich) before the filter and any stage.
	Cgroup       containers.Info  // what the connection's cgroup names; zero when unknown
	ResetReasons tcp.ResetReasons // the kernel's names for the reasons of the resets it sends
}

// Loss is the kernel's count of records it could not deliver, in total
// since the start, and what it adds since the last report.
type Loss struct {
	Total, New uint64
	// RingFull and Recursion split Total: the ring buffer had no room, or
	// a program could not run because another was already running on
	// that CPU.
	RingFull, Recursion uint64
	// Skipped are the kernel half's skips for want of room since the start
	// (not records lost in the ring: what it could not keep, so did not
	// send), NewSkipped what they add since the last report.
	Skipped    tracer.Skipped
	NewSkipped uint64
}

// Sink receives what the engine tells, one item at a time, on the
// engine's goroutine, already enriched and filtered.
type Sink interface {
	Tell(*Item) error
	// Flush lets out what the sink holds. The engine calls it whenever it
	// has read every record the ring held (before it waits for more), at
	// every tick (at most 100 ms apart) and at the end.
	Flush() error
}

// A Stage is a Sink that hands items on to next, after counting them
// (metrics), grouping them (incidents) or holding them: stages compose
// between the engine and the last sink without the engine knowing. A
// stage passes every Flush on to next, after letting out what it holds.
type Stage func(next Sink) Sink

// Chain puts stages in front of last; stages[0] sees items first.
func Chain(last Sink, stages ...Stage) Sink {
	for i := len(stages) - 1; i >= 0; i-- {
		last = stages[i](last)
	}
	return last
}

// SinkFunc is a last Sink that holds nothing (its Flush does nothing:
// not for a stage).
type SinkFunc func(*Item) error

func (f SinkFunc) Tell(it *Item) error { return f(it) }
func (SinkFunc) Flush() error          { return nil }

// tell enriches, filters and hands an item to the sink: the one path of
// narratives, notices and events. After a sink error nothing more is told.
// One Item is reused: under --events a flood of records allocates none.
func (e *Engine) tell(item Item) {
	if e.err != nil {
		return
	}
	e.item = item
	it := &e.item
	e.enrich(it)
	if !e.cfg.Filter.Match(it) {
		return
	}
	if it.Narrative != nil {
		e.stats.Narratives[string(it.Narrative.Verdict)]++
	}
	e.err = e.sink.Tell(it)
}

// conn is what the filter knows of an item's connection.
type conn struct {
	netns         uint32
	local, remote netip.AddrPort
	pid           uint32
	comm          string
}

func (it *Item) conn() conn {
	switch {
	case it.Narrative != nil:
		n := it.Narrative
		return conn{n.NetNS, n.Local, n.Remote, n.Owner.PID, n.Owner.Comm}
	case it.Notice != nil:
		n := it.Notice
		return conn{n.NetNS, n.Local, n.Remote, n.Owner.PID, n.Owner.Comm}
	case it.Event != nil:
		ev := it.Event
		return conn{ev.NetNS, ev.Local, ev.Remote, ev.PID, ev.Comm()}
	}
	return conn{}
}

func (it *Item) cgroupID() uint64 {
	switch {
	case it.Narrative != nil:
		return it.Narrative.CgroupID
	case it.Notice != nil:
		return it.Notice.CgroupID
	case it.Event != nil:
		return it.Event.CgroupID
	}
	return 0
}
