package tracker

import (
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// unfold takes a lifecycle record (wire.KindLifecycle: with --all, the
// kernel half keeps a socket's state changes and sends them in one record,
// bpf/lifecycle.h) as the records it stands for: a state record for each
// change, at its time, with the figures the summary was sent with, then a
// destroy record when it was sent at the destroy. What the tracker
// decides from them (verdicts, timelines, owners, TIME_WAIT reuse) is
// then what it decides from the records sent one by one. The clock has
// moved to the record's time (Handle): the steps are older, and would
// move it no further.
func (t *Tracker) unfold(ev *wire.Event) {
	st := *ev
	st.Life = wire.Life{}
	st.Kind = wire.KindState
	st.Flags &^= wire.FlagLifeDestroyed
	// The first change finds (or begins) the connection; the others go
	// to it while it is tracked and not told (what lookup would find
	// again, by the same cookie), without the maps: with --all that was a
	// tenth of the tracker's work.
	var c *conn
	for i := range ev.Life.Steps {
		s := &ev.Life.Step[i]
		st.Mono, st.OldState, st.State = s.Mono, s.Old, s.State
		if !ev.Time.IsZero() {
			st.Time = ev.Time.Add(s.Mono - ev.Mono)
		}
		if c != nil && c.prev != nil && !c.done && st.State != tcp.StateListen && st.OldState != tcp.StateListen {
			t.handleConn(c, &st)
		} else {
			c = t.handle(&st)
		}
	}
	if ev.Flags&wire.FlagLifeDestroyed != 0 {
		st.Kind, st.Mono, st.Time = wire.KindDestroy, ev.Mono, ev.Time
		st.OldState, st.State = 0, ev.State
		t.handle(&st)
	}
}
