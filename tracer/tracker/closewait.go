package tracker

import (
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// CloseWaitStuck: the peers of a process's connections closed them, and
// the process keeps the sockets open, past Config.CloseWaitAfter. The
// classic descriptor leak behind "too many open files": the kernel can do
// nothing, the connection waits in CLOSE_WAIT until its owner calls
// close() or exits. An episode of the process, not of one connection: it
// is told once when the first of its sockets is found past the threshold
// (Final false, Begins), and once more when the process no longer holds
// any (Final true: it closed them, or exited).
//
// Nothing is sent for a connection entering CLOSE_WAIT (that would be a
// record for every connection a peer closes): watch mode's periodic
// socket scan (tracer.SocketReader, engine's close-wait watch) finds the
// sockets in CLOSE_WAIT, counts from the first scan that saw each one,
// and marks those still there a threshold later notable in the kernel,
// which then sends their end. So a process is told within one scan period
// after the threshold, and "for" is counted from the first scan that saw
// the socket, not from the peer's FIN (at most a scan period earlier).
const CloseWaitStuck Verdict = "close_wait_stuck"

// DefaultCloseWaitAfter is how long a socket may sit in CLOSE_WAIT before
// its owner is told as stuck.
const DefaultCloseWaitAfter = time.Minute

// CloseWaitSocket is a socket a scan found in CLOSE_WAIT past the
// threshold (and marked, so its end is sent).
type CloseWaitSocket struct {
	Cookie        uint64
	NetNS         uint32
	Local, Remote netip.AddrPort
	Inode         uint32
	CgroupID      uint64
	Owner         Owner         // the holder of its descriptor (PID 0: not found)
	For           time.Duration // since the first scan that found it in CLOSE_WAIT
}

// closeWaits groups the stuck sockets by owning process.
type closeWaits struct {
	stuck  map[uint64]*closeWaitGroup // by cookie
	groups map[uint32]*closeWaitGroup // by owner's PID
	// left: sockets seen leaving CLOSE_WAIT, and when; a scan read before
	// that (its result handed over later) must not bring them back.
	left map[uint64]time.Duration
}

// closeWaitGroup is one process's stuck sockets.
type closeWaitGroup struct {
	owner  Owner
	socks  map[uint64]CloseWaitSocket
	oldest CloseWaitSocket
	since  time.Duration // when a scan first found the oldest in CLOSE_WAIT
	peak   int
}

func (t *Tracker) closeWaitAfter() time.Duration {
	if t.cfg.CloseWaitAfter == 0 {
		return DefaultCloseWaitAfter
	}
	return t.cfg.CloseWaitAfter
}

// CloseWaitScan takes a scan read at now: the sockets it found stuck. A
// process with stuck sockets it was not told about is told, with all it
// holds; a stuck socket the scan no longer finds left CLOSE_WAIT without
// a record (lost, or filtered): its process's episode may end.
func (t *Tracker) CloseWaitScan(now time.Duration, stuck []CloseWaitSocket) {
	if t.closeWaitAfter() < 0 {
		return
	}
	cw := &t.cw
	if cw.stuck == nil {
		cw.stuck = map[uint64]*closeWaitGroup{}
		cw.groups = map[uint32]*closeWaitGroup{}
		cw.left = map[uint64]time.Duration{}
	}
	seen := make(map[uint64]bool, len(stuck))
	var fresh []*closeWaitGroup
	for _, s := range stuck {
		seen[s.Cookie] = true
		if at, ok := cw.left[s.Cookie]; ok && at >= now {
			continue // it left after this scan read it
		}
		if cw.stuck[s.Cookie] != nil {
			continue
		}
		g := cw.groups[s.Owner.PID]
		if g == nil {
			g = &closeWaitGroup{owner: s.Owner, socks: map[uint64]CloseWaitSocket{}, oldest: s, since: now - s.For}
			cw.groups[s.Owner.PID] = g
			fresh = append(fresh, g)
		}
		if now-s.For < g.since {
			g.oldest, g.since = s, now-s.For
		}
		g.socks[s.Cookie] = s
		cw.stuck[s.Cookie] = g
		g.peak = max(g.peak, len(g.socks))
	}
	for cookie := range cw.stuck {
		if !seen[cookie] {
			t.closeWaitLeave(cookie, now, tcp.StateClose, false)
		}
	}
	for cookie, at := range cw.left {
		if at < now {
			delete(cw.left, cookie)
		}
	}
	for _, g := range fresh {
		n := t.closeWaitNarrative(g, g.oldest, tcp.StateCloseWait, false, now)
		n.Begins = true
		n.CloseWaitSockets = len(g.socks)
	}
}

// closeWaitState: a stuck socket's end, sent by the kernel because the
// scan marked it (hook in onState).
func (t *Tracker) closeWaitState(c *conn, ev *wire.Event) {
	if ev.OldState != tcp.StateCloseWait || ev.State == tcp.StateCloseWait || t.cw.stuck == nil ||
		ev.Flags&wire.FlagCloseWaitStuck == 0 {
		return // only a socket the scan marked (with --all every socket's end comes)
	}
	t.cw.left[ev.Cookie] = ev.Mono
	if t.cw.stuck[ev.Cookie] == nil {
		return
	}
	t.closeWaitLeave(ev.Cookie, ev.Mono, ev.State, ev.Flags&wire.FlagOwnerExiting != 0)
	// Tracked for its CLOSE_WAIT only: once its owner closed it there is
	// no story left to tell.
	if !t.cfg.All && ev.State == tcp.StateLastAck && !c.closing && c.stallFirst == 0 && !c.kaAnnounced &&
		c.probes == 0 && c.errno == 0 && !c.sentReset && !c.recvReset {
		t.remove(c)
	}
}

// closeWaitLeave: a stuck socket left CLOSE_WAIT (closed by its owner, the
// owner's exit, a reset) into state. The last of a process ends its
// episode.
func (t *Tracker) closeWaitLeave(cookie uint64, now time.Duration, state tcp.State, exiting bool) {
	cw := &t.cw
	g := cw.stuck[cookie]
	if g == nil {
		return
	}
	delete(cw.stuck, cookie)
	last := g.socks[cookie]
	delete(g.socks, cookie)
	if len(g.socks) > 0 {
		return
	}
	delete(cw.groups, g.owner.PID)
	n := t.closeWaitNarrative(g, last, state, true, now)
	n.CloseWaitSockets = g.peak
	n.CloseWaitExited = exiting
}

// closeWaitNarrative queues the process's narrative, about socket s.
func (t *Tracker) closeWaitNarrative(g *closeWaitGroup, s CloseWaitSocket, state tcp.State, final bool, now time.Duration) *Narrative {
	n := &Narrative{
		Time:         t.wallAtZero.Add(now),
		Mono:         now,
		Verdict:      CloseWaitStuck,
		Final:        final,
		Cookie:       s.Cookie,
		Local:        s.Local,
		Remote:       s.Remote,
		NetNS:        s.NetNS,
		Inode:        s.Inode,
		CgroupID:     s.CgroupID,
		Owner:        g.owner,
		State:        state,
		RTOMax:       tcp.RTOMaxDefault,
		CloseWaitFor: now - g.since,
	}
	t.counts[CloseWaitStuck]++
	t.pending.Push(n.Mono, n)
	return n
}

// closeWaitFlush tells the processes still stuck when tcpwatch stops
// (hook in Flush), as an episode in progress.
func (t *Tracker) closeWaitFlush(now time.Duration) {
	for _, g := range t.cw.groups {
		n := t.closeWaitNarrative(g, g.oldest, tcp.StateCloseWait, false, now)
		n.CloseWaitSockets = len(g.socks)
	}
}
