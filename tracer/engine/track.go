package engine

import (
	"fmt"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// dropSource is a Source that watches the kernel's drop path
// (*tracer.Tracer): its narratives can say where packets died.
type dropSource interface {
	SeesDrops() bool
	DropReasons() tcp.DropReasons
}

var _ dropSource = (*tracer.Tracer)(nil)

// timeWaitSource says whether the kernel names the timewait socket a
// dropped segment met (tracer.Tracer.SeesTimeWait).
type timeWaitSource interface{ SeesTimeWait() bool }

var _ timeWaitSource = (*tracer.Tracer)(nil)

// newTracker makes the tracker for the mode: it tells narratives, and
// notices only with --all (or the lab's ModeRoutine).
func (e *Engine) newTracker() *tracker.Tracker {
	cfg := tracker.Config{All: e.cfg.Mode.narratesLifecycles(), MaxConns: e.cfg.MaxConns,
		ResetReasons: e.src.ResetReasons(), Owners: e.owners,
		CloseWaitAfter: e.cfg.CloseWaitAfter,
		// Nothing the engine tells is kept beyond Tell (see Item).
		ReuseNarratives: true}
	if ds, ok := e.src.(dropSource); ok {
		cfg.DropsSeen, cfg.DropReasons = ds.SeesDrops(), ds.DropReasons()
	}
	if ts, ok := e.src.(timeWaitSource); ok {
		cfg.TimeWaitSeen = ts.SeesTimeWait()
	}
	if e.cfg.Mode.tellsRoutine() {
		cfg.Notices = func(n *tracker.Notice) { e.tell(Item{Notice: n}) }
	}
	return tracker.New(cfg, func(n *tracker.Narrative) { e.tell(Item{Narrative: n}) })
}

// handle takes one record read at now: recorded, then tracked (or, with
// --events, told as it is).
func (e *Engine) handle(ev *wire.Event, now time.Time) error {
	if e.cfg.Accept != nil && !e.cfg.Accept(ev) {
		if e.tracker != nil {
			e.tracker.Tick(ev.Mono) // not ours, but the time it tells is
		}
		return nil
	}
	e.stats.Events++
	if e.cfg.Record != nil {
		if err := wire.WriteRecord(e.cfg.Record, ev); err != nil {
			return fmt.Errorf("--record: %w", err)
		}
	}
	if e.tracker == nil {
		e.tell(Item{Event: ev})
		return nil
	}
	e.tracker.Handle(ev)
	e.rec.step(e.tracker, ev.Mono, now, e.cfg.Warn)
	// With --all, routine happenings that are not narratives still show.
	if e.cfg.Mode.tellsRoutine() && ev.Kind == wire.KindKeepalive && ev.Flags&wire.FlagProbeAnswered != 0 {
		e.tell(Item{Event: ev})
	}
	return nil
}

// tick tells the tracker the time when no record comes, so that verdicts
// leave on time on a quiet host; records it does not accept tell it the
// time too (handle). But only an empty ring means it has read everything
// written before now: while records wait unread (a slow reader, qemu),
// the clock would end a close's grace before the reset or error that
// follows it is read, and decide the verdict without them.
func (e *Engine) tick(now time.Time) {
	if e.tracker == nil {
		return
	}
	mono := wire.MonotonicNow()
	drained := !e.src.Buffered()
	// An empty ring: every record written before mono has been read
	// (a reserved record not yet submitted counts as unread).
	var readTo time.Duration
	if drained {
		readTo = mono
	}
	e.rec.step(e.tracker, readTo, now, e.cfg.Warn)
	e.listen.step(e.tracker, now, e.cfg.Warn)
	e.closeWaits.step(e.tracker, e.cfg.Record, now, e.cfg.Warn)
	if drained {
		e.tracker.Tick(mono - inFlight)
	}
	if e.tracker.WantsReconcile() {
		e.rec.soon() // an episode silent past its deadline: alive or killed?
	}
	// Lost records count as read: a ring that overflows is a flood the
	// reader went through at full speed.
	e.mem.afterTick(e.tracker.Stats().Tracked, e.stats.Events+e.stats.Lost, now)
}
