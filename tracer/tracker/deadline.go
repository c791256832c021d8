package tracker

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// An episode's deadline. A stalled or keepalive_probing narrative projects
// when the kernel will give up (GiveUpIn); once that time has passed the
// kernel has killed the socket, unless an answer came. Its end is told by
// the records of the kill (the CLOSE, the error report). Those can fail to
// arrive: the kernel skips a tracing program that is already running on
// the CPU (recursion_misses), and the lab has seen a probe timer's kill
// whose CLOSE and error report never reached any of tcpwatch's programs,
// with nothing counted. Without them the tracker would take the probe
// timer's silence for an answer and tell recovered, or, when the owner
// closes the dead socket, a normal local close that the default mode does
// not tell: a failure told as a success, or not told at all.
//
// So silence past the deadline is checked before it is believed: the
// tracker asks for the socket table (WantsReconcile), and Reconcile tells
// recovered if the socket is still there, or, if it is gone, the verdict
// the kernel reaches at that deadline, marked EndUnseen. A connection
// closed with no word of why after its deadline is told the same way.

// noteDeadline keeps the kernel's projected give-up time of the episode
// just told (n, a stalled or keepalive_probing narrative of c told at now),
// and watches it (checkDeadlines).
func (t *Tracker) noteDeadline(c *conn, n *Narrative, now time.Duration) {
	switch {
	case n.GiveUpIn > 0:
		c.giveUpAt = now + n.GiveUpIn
		if t.awaiting == nil {
			t.awaiting = make(map[*conn]struct{})
		}
		// Pinned: a removed entry still in the set must not be reused for
		// another connection.
		t.awaiting[c], c.pinned = struct{}{}, true
	case n.Endless:
		c.giveUpAt = 0
	}
}

// overdueAfter is how long past its deadline an episode may stay silent
// before the socket table is asked: the kill's records are written at the
// deadline and read within milliseconds; a second covers a busy reader.
const overdueAfter = time.Second

// awaitingScanEvery spaces checkDeadlines' scans: Tick runs at every
// record, and an outage of thousands of connections keeps thousands
// awaiting while records pour in.
const awaitingScanEvery = 100 * time.Millisecond

// checkDeadlines asks for the socket table (WantsReconcile) when an episode
// with a kernel deadline has gone silent well past it: the periodic
// comparison would find it too, but up to ReconcileEvery later. The
// window-probe episodes have their own watch (expireWindowProbes), which
// also knows when the probe timer stopped.
func (t *Tracker) checkDeadlines(now time.Duration) {
	for c := range t.awaiting {
		switch {
		case c.done || c.prev == nil || c.giveUpAt == 0 || c.closing:
			delete(t.awaiting, c)
		case c.window.announced:
			delete(t.awaiting, c) // expireWindowProbes watches it
		case now > c.giveUpAt+overdueAfter:
			delete(t.awaiting, c)
			if c.last.Mono < c.giveUpAt && c.pastDeadline(now) {
				c.overdue, t.checkWanted = true, true
			}
		}
	}
}

// deadlineSlack absorbs the projection's own error: it is dated from the
// record of the timer run that armed the next expiry, read a few
// microseconds after the arming, and the kernel counts in jiffies (4 ms at
// HZ=250). The timer never fires earlier than that.
const deadlineSlack = 10 * time.Millisecond

// pastDeadline says whether c is in a told episode whose kernel deadline
// has passed at now.
func (c *conn) pastDeadline(now time.Duration) bool {
	return c.giveUpAt != 0 && now >= c.giveUpAt-deadlineSlack && (c.stallFirst != 0 || c.kaAnnounced || c.window.announced)
}

// endAtDeadline makes c's end the kernel's at its deadline, its own
// records of it unseen: the error is the one tcp_write_err() sets (the
// last soft error, else ETIMEDOUT), and the verdict the one the kill's
// records would have given. The keepalive timer's kill is a keepalive
// timeout whatever the error; the retransmission or probe timer's is a
// host unreachable when a router's ICMP left EHOSTUNREACH or ENETUNREACH
// as the soft error (finalVerdict's rule for a CLOSE with that error).
func (c *conn) endAtDeadline() Verdict {
	c.endUnseen = true
	if c.errno == 0 {
		c.errno = c.last.SkErrSoft
		if c.errno == 0 {
			c.errno = int32(unix.ETIMEDOUT)
		}
	}
	switch {
	case c.kaAnnounced && c.stallFirst == 0 && !c.window.announced:
		return KeepaliveTimeout
	case isUnreachable(c.errno):
		return HostUnreachable
	}
	return RetransmitTimeout
}

// connectDeadlinePassed says whether a connect whose SYNs went unanswered
// was closed, with no word of why, at or after the moment the kernel gives
// up on it (tcp_syn_retries' budget from the first SYN). The kernel kills
// the attempt there and connect() returns its error: a close after that
// point is the application's answer to the kernel's timeout, whose CLOSE
// and error report did not reach tcpwatch, not a timeout of its own.
func (c *conn) connectDeadlinePassed(now time.Duration) bool {
	if c.connectAt == 0 || c.last.Settings.SynRetries == 0 {
		return false // no SYN seen, or a record without the socket's settings
	}
	budget := tcp.SynBudget(c.last.Settings.SynRetries, c.last.RTOMax)
	return now >= c.connectAt+budget-deadlineSlack
}

// connectEndAtDeadline makes a connect's end the kernel's at its deadline:
// its timeout (or, after a router's ICMP, host unreachable), unseen.
func (c *conn) connectEndAtDeadline() Verdict {
	c.endUnseen = true
	c.closeOld = tcp.StateSynSent
	c.errno = c.last.SkErrSoft
	if c.errno == 0 {
		c.errno = int32(unix.ETIMEDOUT)
	}
	if isUnreachable(c.errno) {
		return HostUnreachable
	}
	return ConnectTimeout
}

// WantsReconcile says, once, that an episode went silent past its deadline
// and only the socket table can tell whether it ended or recovered.
func (t *Tracker) WantsReconcile() bool {
	w := t.checkWanted
	t.checkWanted = false
	return w
}
