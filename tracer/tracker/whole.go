package tracker

import (
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// A lifecycle record sent at the socket's destroy (wire.FlagLifeDestroyed)
// is a connection's whole story: with --all, that is every normal end of
// every connection on the host. The generic path (unfold) gave each an
// entry: found in byCookie and byTuple, queued to close, removed and
// reused, half a dozen cold cache lines a connection that nothing would
// look up again. tellWhole runs the same steps (handleConn: the same
// verdicts, timelines, owners, TIME_WAIT memory, notices, counters) on
// one scratch entry that no map, list or queue holds, when nothing else
// could have found the entry the generic path would make:
//   - no entry holds the cookie or the 4-tuple (the generic path would
//     continue that one's story, or take its 4-tuple over);
//   - the cookie is not one destroyed lately (the generic path tells
//     nothing of it);
//   - the tracker is not full (the generic path would evict the least
//     recently active entry to make room);
//   - no step is a listener's (they go to the listeners' map, not to a
//     connection), and the record is not a connect() that found no port
//     (its fold of failures keeps the entry).
//
// The privileged tests compare the stories of real connections with and
// without the summary; TestWholeLifecycleTellsTheSame compares this path
// with the generic one.

// tellWhole tells ev, a lifecycle record, without an entry when it can;
// it says whether it did.
func (t *Tracker) tellWhole(ev *wire.Event) bool {
	if t.unfoldOnly || !t.cfg.All || ev.Flags&wire.FlagLifeDestroyed == 0 || ev.Cookie == 0 || ev.Life.Steps == 0 ||
		ev.Flags&(wire.FlagNoSocket|wire.FlagNoLocalPort) != 0 || t.tracked >= t.cfg.MaxConns {
		return false
	}
	tk, ok := tupleOf(ev)
	if !ok {
		return false
	}
	for i := range ev.Life.Steps {
		if s := &ev.Life.Step[i]; s.State == tcp.StateListen || s.Old == tcp.StateListen {
			return false
		}
	}
	if _, ok := t.byCookie[ev.Cookie]; ok {
		return false
	}
	if _, ok := t.byTuple[tk]; ok {
		return false
	}
	if t.gone.Has(ev.Cookie) {
		return false
	}
	if t.scratch == nil {
		t.scratch = new(conn)
	}
	c := t.scratch
	st := *ev
	st.Life = wire.Life{}
	st.Kind = wire.KindState
	st.Flags &^= wire.FlagLifeDestroyed
	for i := range ev.Life.Steps {
		s := &ev.Life.Step[i]
		st.Mono, st.OldState, st.State = s.Mono, s.Old, s.State
		if !ev.Time.IsZero() {
			st.Time = ev.Time.Add(s.Mono - ev.Mono)
		}
		if i == 0 {
			*c = conn{}
			t.begin(c, &st, tk)
			c.scratch = true
		}
		if !c.done { // what lookup would find again ignores the rest
			t.handleConn(c, &st)
		}
	}
	st.Kind, st.Mono, st.Time = wire.KindDestroy, ev.Mono, ev.Time
	st.OldState, st.State = 0, ev.State
	t.handleConn(c, &st) // remove does nothing to an entry no list holds
	return true
}
