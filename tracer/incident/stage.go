package incident

import (
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/pipeline"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Sink receives incident records, besides what a pipeline.Sink receives.
type Sink interface {
	pipeline.Sink
	Incident(*Incident) error
}

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

// StageOptions configure the stage.
type StageOptions struct {
	Model   Config
	Telling Telling
	// Connections also tells the narratives of connections in an
	// incident (--connections), news only for Records.
	Connections bool
	// SharedFate, when set, fills an incident's SharedFate before it is
	// told (it reads the kernel's socket table: see SharedFateOf).
	SharedFate func(*Incident, func(netns uint32, cookie uint64) bool)
	// Observe, when set, is told every incident record (for metrics).
	Observe func(*Incident)
}

// Stage sits between the filters and the output: it groups the narratives
// it is handed into incidents and decides which go on.
type Stage struct {
	opts  StageOptions
	model *Model
	next  Sink
	err   error
}

// NewStage returns a stage that hands what goes on to next.
func NewStage(opts StageOptions, next Sink) *Stage {
	s := &Stage{opts: opts, next: next}
	s.model = New(opts.Model, s.report)
	return s
}

// Model is the stage's model (its Stats).
func (s *Stage) Model() *Model { return s.model }

func (s *Stage) report(inc *Incident) {
	if s.opts.SharedFate != nil {
		s.opts.SharedFate(inc, s.model.follows)
	}
	if s.opts.Observe != nil {
		s.opts.Observe(inc)
	}
	if s.err == nil {
		s.err = s.next.Incident(inc)
	}
}

// Narrative takes one narrative after the filters.
func (s *Stage) Narrative(n *tracker.Narrative) error {
	tag := s.model.Observe(n)
	if s.err != nil {
		return s.err
	}
	n.Incident = tag.Incident
	if !s.goesOn(tag) {
		return nil
	}
	return s.next.Narrative(n)
}

func (s *Stage) goesOn(tag Tag) bool {
	switch s.opts.Telling {
	case Records:
		switch {
		case tag.News == Repeat:
			return false
		case tag.Member() && tag.News == First:
			// Listed in the incident's record (Joined).
			return s.opts.Connections
		}
		return true
	default:
		return !tag.Member() || s.opts.Connections
	}
}

func (s *Stage) Notice(n *tracker.Notice) error                 { return s.next.Notice(n) }
func (s *Stage) Event(ev *wire.Event, r tcp.ResetReasons) error { return s.next.Event(ev, r) }
func (s *Stage) Loss(l pipeline.Loss) error                     { return s.next.Loss(l) }

// tickLag holds the stage's clock back from now by what a narrative may
// still be on its way (the tracker's grace and a tick), so that time does
// not close an incident ahead of the narratives that would keep it open.
const tickLag = 200 * time.Millisecond

// Flush is called by the pipeline at every tick and whenever it drained
// the ring: incidents open, update and close on time, then the output
// writes what it holds.
func (s *Stage) Flush() error {
	s.model.Tick(wire.MonotonicNow() - tickLag)
	if s.err != nil {
		return s.err
	}
	if f, ok := s.next.(pipeline.Flusher); ok {
		return f.Flush()
	}
	return nil
}

// End tells the end of every incident still open (tcpwatch stops), once
// the pipeline has told its last narrative.
func (s *Stage) End() error {
	s.model.Flush(wire.MonotonicNow())
	if s.err != nil {
		return s.err
	}
	if f, ok := s.next.(pipeline.Flusher); ok {
		return f.Flush()
	}
	return nil
}

// follows says whether the model follows the connection with this cookie
// in that namespace (it is in an incident, not idle beside it).
func (m *Model) follows(netns uint32, cookie uint64) bool {
	_, ok := m.cookies[cookieKey{netns, cookie}]
	return ok
}
