package tracker

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

func (t *Tracker) onState(c *conn, ev *wire.Event) {
	t.closeWaitState(c, ev)
	if t.portsExhausted(c, ev) {
		return
	}
	if t.cfg.Notices != nil {
		t.watchTimeWait(c, ev)
	}
	switch {
	case ev.OldState == tcp.StateEstablished && ev.State == tcp.StateFinWait1 && ev.Flags&wire.FlagOwnerExiting != 0 && c.died():
		// The owner died with the connection open from both sides.
		t.finish(c, LocalProcessExited, ev.Mono)
	case ev.State == tcp.StateClose:
		if ev.SkErr != 0 {
			c.errno = ev.SkErr
		}
		t.startClosing(c, ev.Mono, ev.OldState)
	}
}

func (t *Tracker) startClosing(c *conn, mono time.Duration, old tcp.State) {
	if c.closing {
		return
	}
	c.closing, c.closeMono, c.closeOld = true, mono, old
	c.closeDue = mono
	if old == tcp.StateEstablished && c.errno == 0 && !c.recvReset {
		// An established connection closed without an error or a reset
		// from the peer: tcp_close() or tcp_disconnect() in the owner's
		// task, whose reset (unread data, SO_LINGER 0, an exiting owner)
		// comes next, then the destroy that finalizes it. Under a slow
		// CPU (qemu) the reset came more than the grace later; wait for
		// the destroy up to closeWait.
		c.closeDue = mono + closeWait - t.cfg.Grace
	}
	if c.scratch {
		return // its destroy is in the same record (whole.go)
	}
	c.queued++ // reuse.go
	t.closing.Push(c.closeDue, c)
}

// onRecvReset notes the peer's reset and what it answered.
func (c *conn) onRecvReset(ev *wire.Event) {
	c.recvReset = true
	c.recvResetState = ev.State
	c.recvRetransmits = int(ev.Retransmits)
	c.recvProbes = int(ev.ProbesOut)
	// A reset that answers retransmissions or probes sent into silence
	// comes from a peer that no longer knows the connection.
	c.recvAfterSilence = ev.Retransmits > 0 || ev.ProbesOut > 0 || c.stallFirst != 0 || c.probes > 0
}

// onSendReset notes a reset this host sent (not one that answers a
// segment for no socket): an exiting owner's reset ends the story.
func (t *Tracker) onSendReset(c *conn, ev *wire.Event) {
	if ev.Flags&wire.FlagReplyReset != 0 {
		if ev.State == tcp.StateSynSent {
			t.onSynAnsweredOldAck(c, ev)
		}
		return
	}
	c.sentReset, c.sentReason = true, ev.Detail
	c.sentInKeepalive = ev.Flags&wire.FlagInKeepalive != 0
	if ev.Flags&wire.FlagOwnerExiting != 0 && !c.sawPeerFIN {
		t.finish(c, LocalProcessExited, ev.Mono)
	}
}

// onDestroy ends the connection: a close waiting for it is judged now.
func (t *Tracker) onDestroy(c *conn, ev *wire.Event) {
	if c.closing {
		t.finalize(c, c.closeMono)
	}
	t.remove(c)
	t.rememberGone(c.cookie, ev.Mono)
}

// rememberGone keeps a destroyed socket's cookie for goneFor.
func (t *Tracker) rememberGone(cookie uint64, mono time.Duration) {
	if cookie == 0 {
		return
	}
	t.gone.Add(cookie, mono)
}

// forgetGone drops the cookies destroyed more than goneFor before now.
func (t *Tracker) forgetGone(now time.Duration) { t.gone.Expire(now) }

// finalize decides why a connection that reached CLOSE died.
func (t *Tracker) finalize(c *conn, now time.Duration) {
	v := c.finalVerdict()
	if v == LocalClosed && c.closeOld == 0 && !c.sentReset && c.pastDeadline(now) {
		// Closed with no record of how (no CLOSE, error or reset came)
		// after its episode's deadline: the kernel ended it there.
		v = c.endAtDeadline()
	}
	if v == ConnectAbandoned && c.connectDeadlinePassed(now) {
		v = c.connectEndAtDeadline()
	}
	t.finish(c, v, now)
}

// finish tells a connection's final verdict, once: nothing is told about
// it after that.
func (t *Tracker) finish(c *conn, v Verdict, now time.Duration) {
	if c.done {
		return
	}
	c.done, c.closing = true, false
	t.refuseAfterEnd(c, now)
	if v == LocalClosed || v == PeerClosed {
		if !t.cfg.All && !(v == PeerClosed && c.recvReset) {
			return
		}
	}
	t.narrate(c, v, true, now)
}

// died says whether the owner's exit was a failure for this connection:
// killed by a signal, unread data thrown away (RST), an outage in progress,
// or a non-zero exit status that left the peer unfinished (it reset the
// connection, or its data arrived after the exit and the kernel aborted).
// A process that finishes its work and exits, its kernel closing the
// connection with FIN and the peer closing in turn, closed it normally,
// whatever its status: a postgres backend after the client's Terminate
// exits 0, an sshd session process after the client's disconnect exits 255.
// Whether the peer was finished shows only at the end, so a status-only
// exit is judged when the connection closes.
func (c *conn) died() bool {
	return tcp.ExitSignal(c.exitCode) != 0 || c.sentReset || c.stallFirst != 0 || c.kaAnnounced || c.window.announced ||
		tcp.ExitStatus(c.exitCode) != 0 && (c.recvReset || c.errno != 0)
}

// finalVerdict reads the connection's last events in order of what explains
// the death best.
func (c *conn) finalVerdict() Verdict {
	switch {
	case c.exiting && !c.sawPeerFIN && c.died():
		return LocalProcessExited
	case c.kaKilled || c.sentInKeepalive:
		return KeepaliveTimeout
	case c.recvReset:
		switch {
		case c.recvResetState == tcp.StateSynSent:
			return ConnectRefused
		case c.sawPeerFIN || c.recvResetState == tcp.StateCloseWait || c.recvResetState == tcp.StateLastAck:
			return PeerClosed
		case c.recvAfterSilence:
			return PeerLostState
		}
		return PeerReset
	case c.closeOld == tcp.StateSynSent && c.errno == int32(unix.ECONNREFUSED):
		return ConnectRefused
	case c.closeOld == tcp.StateSynSent && c.errno != 0:
		if isUnreachable(c.errno) {
			return HostUnreachable
		}
		return ConnectTimeout
	case c.connecting && c.synSent && c.errno == 0 && c.synRetrans > 0:
		// Closed while its SYNs went unanswered, with no error from the
		// kernel: the application's own connect timeout. One closed
		// before any retransmission (a happy-eyeballs race lost, a
		// cancelled request) is no news.
		return ConnectAbandoned
	case c.errno == int32(unix.ETIMEDOUT):
		if c.probes > 0 && c.stallFirst == 0 {
			return KeepaliveTimeout
		}
		return RetransmitTimeout
	case isUnreachable(c.errno):
		return HostUnreachable
	case c.sawPeerFIN:
		return PeerClosed
	case c.sentReset || c.errno != 0:
		return LocalAbort
	}
	return LocalClosed
}

func isUnreachable(e int32) bool { return tcp.Unreachable(e) }
