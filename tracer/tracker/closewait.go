package tracker

import (
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// CloseWaitStuck: the peers of a process's connections closed them, and
// the process keeps the sockets open, past Config.CloseWaitAfter. The
// classic descriptor leak behind "too many open files": the kernel can do
// nothing, the connection waits in CLOSE_WAIT until its owner calls
// close() or exits. An episode of the process, not of one connection: it
// is told once when the first of its sockets crosses the threshold (Final
// false, Begins), and once more when the process no longer holds any
// (Final true: it closed them, or exited).
const CloseWaitStuck Verdict = "close_wait_stuck"

// DefaultCloseWaitAfter is how long a socket may sit in CLOSE_WAIT before
// its owner is told as stuck.
const DefaultCloseWaitAfter = time.Minute

// closeWaits times the sockets in CLOSE_WAIT and groups those past the
// threshold by owning process.
type closeWaits struct {
	entered map[*conn]time.Duration // every socket in CLOSE_WAIT, since when
	due     timeQueue[closeWaitDue] // entry + threshold, to look at once
	groups  map[uint32]*closeWaitGroup
	member  map[*conn]*closeWaitGroup
}

type closeWaitDue struct {
	c       *conn
	entered time.Duration
}

// closeWaitGroup is one process's stuck sockets.
type closeWaitGroup struct {
	owner  Owner
	conns  map[*conn]time.Duration // stuck sockets it holds, and since when
	told   bool
	oldest *conn
	since  time.Duration // when the oldest entered CLOSE_WAIT
	peak   int
}

func (t *Tracker) closeWaitAfter() time.Duration {
	if t.cfg.CloseWaitAfter == 0 {
		return DefaultCloseWaitAfter
	}
	return t.cfg.CloseWaitAfter
}

// closeWaitState follows a connection into and out of CLOSE_WAIT (hook
// in onState).
func (t *Tracker) closeWaitState(c *conn, ev *wire.Event) {
	if t.closeWaitAfter() < 0 {
		return
	}
	cw := &t.cw
	switch {
	case ev.State == tcp.StateCloseWait && ev.OldState != tcp.StateCloseWait:
		if cw.entered == nil {
			cw.entered = map[*conn]time.Duration{}
			cw.groups = map[uint32]*closeWaitGroup{}
			cw.member = map[*conn]*closeWaitGroup{}
		}
		cw.entered[c] = ev.Mono
		cw.due.Push(ev.Mono+t.closeWaitAfter(), closeWaitDue{c, ev.Mono})
	case ev.OldState == tcp.StateCloseWait && ev.State != tcp.StateCloseWait:
		t.closeWaitLeave(c, ev.Mono, ev.Flags&wire.FlagOwnerExiting != 0)
		// Tracked for its CLOSE_WAIT only (default mode sends the
		// transition for every connection a peer closes): once its owner
		// closed it there is no story left to tell.
		if !t.cfg.All && ev.State == tcp.StateLastAck && !c.closing && c.stallFirst == 0 && !c.kaAnnounced &&
			c.probes == 0 && c.errno == 0 && !c.sentReset && !c.recvReset {
			t.remove(c)
		}
	}
}

// closeWaitLeave: c left CLOSE_WAIT (closed by its owner, the owner's
// exit, a reset) or is forgotten. The last stuck socket of a told process
// ends its episode.
func (t *Tracker) closeWaitLeave(c *conn, now time.Duration, exiting bool) {
	cw := &t.cw
	if _, ok := cw.entered[c]; !ok {
		return
	}
	delete(cw.entered, c)
	g := cw.member[c]
	if g == nil {
		return
	}
	delete(cw.member, c)
	delete(g.conns, c)
	if len(g.conns) > 0 {
		return
	}
	delete(cw.groups, g.owner.PID)
	if g.told {
		n := t.narrate(g.oldest, CloseWaitStuck, true, now)
		n.CloseWaitSockets = g.peak
		n.CloseWaitFor = now - g.since
		n.CloseWaitExited = exiting
	}
}

// closeWaitTick looks at the sockets that reached the threshold in
// CLOSE_WAIT (hook in Tick): their owner is named then, not at every
// peer's close, and a process with stuck sockets it was not told about is
// told, with all it holds.
func (t *Tracker) closeWaitTick(now time.Duration) {
	cw := &t.cw
	var fresh []*closeWaitGroup
	for {
		at, d, ok := cw.due.Front()
		if !ok || at > now {
			break
		}
		cw.due.Pop()
		if entered, ok := cw.entered[d.c]; !ok || entered != d.entered || cw.member[d.c] != nil {
			continue // it left CLOSE_WAIT, or entered it again later
		}
		owner := t.ownerOf(d.c)
		g := cw.groups[owner.PID]
		if g == nil {
			g = &closeWaitGroup{owner: owner, conns: map[*conn]time.Duration{}, oldest: d.c, since: d.entered}
			cw.groups[owner.PID] = g
		}
		g.conns[d.c] = d.entered
		cw.member[d.c] = g
		g.peak = max(g.peak, len(g.conns))
		if !g.told {
			fresh = append(fresh, g)
		}
	}
	for _, g := range fresh {
		if g.told {
			continue
		}
		g.told = true
		n := t.narrate(g.oldest, CloseWaitStuck, false, now)
		n.Begins = true
		n.CloseWaitSockets = len(g.conns)
		n.CloseWaitFor = now - g.since
	}
}

// closeWaitFlush tells the processes still stuck when tcpwatch stops
// (hook in Flush), as an episode in progress.
func (t *Tracker) closeWaitFlush(now time.Duration) {
	for _, g := range t.cw.groups {
		if !g.told || g.oldest == nil {
			continue
		}
		n := t.narrate(g.oldest, CloseWaitStuck, false, now)
		n.CloseWaitSockets = len(g.conns)
		n.CloseWaitFor = now - g.since
	}
}
