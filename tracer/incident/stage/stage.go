// Package stage puts the incident model (tracer/incident) between the
// engine's filter and the output: it groups the narratives it is handed
// into incidents, tells the incidents' records, and decides which
// connections' narratives go on (folded, or only when they are news).
package stage

import (
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Telling says which narratives of connections go on to the output.
type Telling int

const (
	// Lines is for a person reading text: a lone connection's narratives
	// as today; those of a connection in an incident are folded into the
	// incident's lines.
	Lines Telling = iota
	// Records is for a pipeline that pays per byte (JSON): every
	// connection's repeats are skipped (only news goes on), and a
	// connection in an incident is listed in the incident's record when
	// it joins; its later news goes on, for the output to fold.
	Records
)

// Options configure the stage.
type Options struct {
	Model   incident.Config
	Telling Telling
	// Connections also tells the narratives of connections in an
	// incident (--connections); for Records, news only.
	Connections bool
	// SharedFate, when set, fills an incident's SharedFate before it is
	// told (incident.ReadSharedFate reads the kernel's socket table);
	// follows says which connections are in an incident.
	SharedFate func(inc *incident.Incident, follows func(netns uint32, cookie uint64) bool)
	// Observe, when set, is told every incident record (for metrics).
	Observe func(*incident.Incident)
	// InTrouble, when set, is told each open incident's connections in
	// trouble about once a second, from the engine's goroutine (for a
	// gauge that follows them between the incident's records).
	InTrouble func(id string, inTrouble int)
	// Live, when set, is handed the open incidents about once a second
	// (incident.Model.Live, at most LiveMembers connections each), from
	// the engine's goroutine: for a live view.
	Live        func([]incident.Live)
	LiveMembers int
}

// Incidents is the stage: an engine.Stage through its Stage method.
type Incidents struct {
	opts  Options
	model *incident.Model
	next  engine.Sink
	err   error
	item  engine.Item
	// lastLive is when Live was last called; sharedFate keeps each open
	// incident's last reading for it.
	lastLive   time.Time
	lastCount  time.Time     // when InTrouble was last called
	monoAt     time.Time     // when monoBase was read
	monoBase   time.Duration // CLOCK_MONOTONIC at monoAt
	sharedFate map[string]*incident.SharedFate
}

// New returns the stage; Stage plugs it into an engine.Chain.
func New(opts Options) *Incidents {
	s := &Incidents{opts: opts, sharedFate: map[string]*incident.SharedFate{}}
	s.model = incident.New(opts.Model, s.report)
	return s
}

// Stage is an engine.Stage: it hands what goes on to next.
func (s *Incidents) Stage(next engine.Sink) engine.Sink {
	s.next = next
	return s
}

// Model is the stage's model (its Stats).
func (s *Incidents) Model() *incident.Model { return s.model }

func (s *Incidents) report(inc *incident.Incident) {
	// Once the peer answered again, its idle connections share no fate.
	if s.opts.SharedFate != nil && inc.Outcome != incident.Recovered {
		s.opts.SharedFate(inc, s.model.Follows)
	}
	if s.opts.Live != nil {
		if inc.Phase == incident.Close {
			delete(s.sharedFate, inc.ID)
		} else {
			s.sharedFate[inc.ID] = inc.SharedFate
		}
	}
	if s.opts.Observe != nil {
		s.opts.Observe(inc)
	}
	if s.err == nil && s.next != nil {
		s.item = engine.Item{Incident: inc}
		s.err = s.next.Tell(&s.item)
	}
}

// Tell takes one item after the filter.
func (s *Incidents) Tell(it *engine.Item) error {
	if it.Narrative == nil {
		return s.next.Tell(it)
	}
	n := it.Narrative
	tag := s.model.Observe(n, it.Cgroup.ID)
	if s.err != nil {
		return s.err
	}
	n.Incident = tag.Incident
	if !s.goesOn(tag) {
		return nil
	}
	return s.next.Tell(it)
}

func (s *Incidents) goesOn(tag incident.Tag) bool {
	switch s.opts.Telling {
	case Records:
		switch {
		case tag.News == incident.Repeat:
			return false
		case tag.Member() && tag.News == incident.First:
			// Listed in the incident's record (Joined).
			return s.opts.Connections
		}
		return true
	default:
		return !tag.Member() || s.opts.Connections
	}
}

// mono is the kernel's CLOCK_MONOTONIC now, from the Go runtime's
// monotonic clock (the same clock, read without a system call) since one
// reading taken with one.
func (s *Incidents) mono() time.Duration {
	if s.monoAt.IsZero() {
		s.monoAt, s.monoBase = time.Now(), wire.MonotonicNow()
	}
	return s.monoBase + time.Since(s.monoAt)
}

// tickLag holds the stage's clock back from now by what a narrative may
// still be on its way (the tracker's grace and a tick), so that time does
// not close an incident ahead of the narratives that would keep it open.
const tickLag = 200 * time.Millisecond

// Flush is called by the engine at every tick and whenever it drained the
// ring: incidents open, update and close on time, then the output writes
// what it holds.
func (s *Incidents) Flush() error {
	// With no connection in trouble there is nothing to time: a healthy
	// host pays a map length here, not a clock read.
	if s.model.Open() > 0 {
		s.model.Tick(s.mono() - tickLag)
	}
	if s.err != nil {
		return s.err
	}
	if s.opts.InTrouble != nil && s.model.Open() > 0 && time.Since(s.lastCount) >= liveEvery {
		s.lastCount = time.Now()
		s.model.InTrouble(s.opts.InTrouble)
	}
	if s.opts.Live != nil && time.Since(s.lastLive) >= liveEvery {
		s.lastLive = time.Now()
		live := s.model.Live(s.opts.LiveMembers)
		for i := range live {
			live[i].SharedFate = s.sharedFate[live[i].ID]
		}
		s.opts.Live(live)
	}
	return s.next.Flush()
}

// liveEvery is how often Options.Live is called.
const liveEvery = time.Second

// End tells the end of every incident still open (tcpwatch stops), once
// the engine has told its last narrative.
func (s *Incidents) End() error {
	s.model.Flush(s.mono())
	if s.err != nil {
		return s.err
	}
	return s.next.Flush()
}
