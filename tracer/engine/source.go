package engine

import (
	"time"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Source is where records come from, decoded: the kernel half
// (*tracer.Tracer), or a fake in tests. The engine reads it from one
// goroutine; only Stop is called from another.
type Source interface {
	// Read blocks for the next record and decodes it into ev. It returns
	// os.ErrDeadlineExceeded when the deadline passes first, and
	// tracer.ErrClosed once Stop was called.
	Read(ev *wire.Event) error
	SetDeadline(deadline time.Time)
	// Buffered says whether records wait unread: when none do, the
	// engine has read everything written before now.
	Buffered() bool
	// Losses are the kernel's counts of records it could not deliver.
	Losses() (tracer.Losses, error)
	Stop() error
	// ResetReasons names the kernel's reasons for the resets it sends:
	// the one route by which they reach the tracker and the sinks.
	ResetReasons() tcp.ResetReasons
}

var _ Source = (*tracer.Tracer)(nil)

// tickEvery is how often the tracker is told the time when no record
// comes, so that verdicts leave promptly.
const tickEvery = 100 * time.Millisecond

// inFlight is how long a record may take from its timestamp to the ring
// (the rest of the program that writes it): the clock a drained ring tells
// the tracker is held back by it.
const inFlight = 10 * time.Millisecond

// clockEvery is how many records the reading loop handles on one clock
// reading while more wait in the ring (see Run).
const clockEvery = 64

// lossEvery is how often the kernel's loss counters are read.
const lossEvery = time.Second

// schedule is when the reading loop next does its periodic work.
type schedule struct {
	tick               time.Duration
	nextTick, nextLoss time.Time
}

func (s *schedule) start(mode Mode, now time.Time) {
	s.tick = tickEvery
	if mode.kernelSendsAll() {
		// The kernel then writes without waking the reader: look at
		// least as often as the tracer does.
		s.tick = tracer.PollInterval
	}
	s.nextTick, s.nextLoss = now.Add(s.tick), now.Add(lossEvery)
}

// periodic reads the loss counters every second, tells the tracker the
// time at every tick, and flushes the sink when the ring is empty.
func (e *Engine) periodic(now time.Time) {
	if now.After(e.clock.nextLoss) {
		e.clock.nextLoss = now.Add(lossEvery)
		if err := e.checkLoss(); err != nil {
			e.err = err
			return
		}
	}
	if now.After(e.clock.nextTick) {
		e.clock.nextTick = now.Add(e.clock.tick)
		e.tick(now)
		if e.err == nil {
			e.err = e.sink.Flush()
		}
	}
	// Out of records: what the sink holds goes out before the wait.
	if e.err == nil && !e.src.Buffered() {
		e.err = e.sink.Flush()
	}
}

// checkLoss reads the kernel's loss counters, reports them (Observe) and
// tells the sink when they grew.
func (e *Engine) checkLoss() error {
	l, err := e.src.Losses()
	if err != nil {
		return err
	}
	total := l.Total()
	lastLoss, lastSkipped := e.stats.Lost, e.stats.Skipped
	e.stats.Lost, e.stats.RingFull, e.stats.Recursion = total, l.RingFull, l.Recursion
	e.stats.Skipped = l.Skipped
	e.trackerStats()
	if e.cfg.Observe != nil {
		e.cfg.Observe(e.stats)
	}
	newSkipped := l.Skipped.Total() - min(lastSkipped.Total(), l.Skipped.Total())
	if total <= lastLoss && newSkipped == 0 {
		return nil
	}
	if e.tracker != nil {
		// A skip that can keep an end from being sent counts as a loss
		// for the stories (lost_records, untold's words).
		if total > lastLoss || l.Skipped.EndsAtRisk() > lastSkipped.EndsAtRisk() {
			e.tracker.RecordsLost()
			e.rec.soon()
		}
		// Drops no longer joined to every connection in trouble: none
		// is claimed for the connections tracked meanwhile.
		if l.Skipped.TroubledFull > lastSkipped.TroubledFull {
			e.tracker.DropsUnjoined()
		}
	}
	return e.sink.Tell(&Item{Loss: &Loss{Total: total, New: total - min(lastLoss, total), RingFull: l.RingFull, Recursion: l.Recursion,
		Skipped: l.Skipped, NewSkipped: newSkipped}})
}
