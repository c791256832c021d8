package tracker

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// narrate gathers the facts behind verdict v for c and queues the
// narrative: it is told once the grace period has passed, in time order.
// The narrative is returned for the caller to amend before it is told,
// except a normal end's, held compact (held.go): nil then.
func (t *Tracker) narrate(c *conn, v Verdict, final bool, now time.Duration) *Narrative {
	ev := &c.last
	normal := final && (v == LocalClosed || v == PeerClosed) && !t.holdWhole
	var n *Narrative
	if normal {
		if t.building == nil {
			t.building = new(Narrative)
		}
		n = t.building
	} else {
		n = t.newNarrative()
	}
	tl := n.Timeline
	*n = Narrative{
		Time:        t.wallAtZero.Add(now),
		Mono:        now,
		Verdict:     v,
		Final:       final,
		Cookie:      c.cookie,
		Local:       c.local,
		Remote:      c.remote,
		NetNS:       c.netns,
		Inode:       c.inode,
		CgroupID:    c.cgroupID,
		Owner:       t.ownerOf(c),
		State:       c.state,
		Orphan:      c.orphan,
		Connecting:  c.connecting,
		Settings:    ev.Settings,
		RTOMax:      ev.RTOMax,
		SkErrSoft:   ev.SkErrSoft,
		CAState:     ev.CAState,
		SentReset:   c.sentReset,
		LostRecords: c.lossEpoch != t.lossEpoch,
	}
	if !normal { // (a held end's is made when it is told)
		n.Timeline = t.timeline(tl, c)
	}
	if n.RTOMax <= 0 {
		n.RTOMax = tcp.RTOMaxDefault
	}
	if v == LocalProcessExited {
		n.ExitSignal = tcp.ExitSignal(c.exitCode)
		n.ExitStatus = tcp.ExitStatus(c.exitCode)
	}
	if c.sentReset {
		n.ResetReason = t.cfg.ResetReasons.Name(c.sentReason)
	}
	if c.recvReset {
		n.ResetState = c.recvResetState
	}
	switch v {
	case Stalled:
		n.Begins, c.toldStall = c.toldStall != c.stallFirst, c.stallFirst
	case KeepaliveProbing:
		n.Begins, c.toldProbing = c.toldProbing != c.probeSince, c.probeSince
	}
	n.EndUnseen = final && c.endUnseen
	if n.EndUnseen {
		t.endsAtDeadline++
	}
	n.Errno = c.errnoSeen(v)
	n.Budget = budgetOf(c, ev, v)
	c.outageFacts(n, now)
	c.windowFacts(n, now)
	t.dropFacts(c, n)
	if final {
		n.PeerEnd = t.peerEnd(c, v, now)
	} else if v == Stalled || v == KeepaliveProbing {
		t.noteDeadline(c, n, now)
	}
	t.counts[v]++
	if !normal {
		t.pending.Push(n.Mono, n)
		return n
	}
	h := t.pending.slot(n.Mono)
	if h.end.pack(n, c) {
		return nil
	}
	// Not one a held end can carry (a peer's end, a reset's reason): held
	// whole, as any other.
	h.full = t.newNarrative()
	tl = h.full.Timeline
	*h.full = *n
	h.full.Timeline = t.timeline(tl, c)
	return h.full
}

// ownerOf names the process that holds c's socket: the one the kernel saw
// act on it, else the holder of its descriptor, else its listener's owner.
func (t *Tracker) ownerOf(c *conn) Owner {
	if c.owner.Exact() {
		return c.owner
	}
	if t.cfg.Owners != nil && c.inode != 0 {
		lookup := t.cfg.Owners.Owner
		if k, ok := t.cfg.Owners.(knownOwners); ok && (c.orphan || c.destroyed) {
			lookup = k.Known // no descriptor left to find
		}
		if pid, comm, ok := lookup(c.inode); ok {
			c.owner = Owner{PID: pid, Comm: comm, Source: wire.OwnerProcfs}
			return c.owner
		}
	}
	if c.owner.PID == 0 {
		if o, ok := t.listeners[listenKey{c.netns, c.local.Port()}]; ok {
			c.owner = o
		}
	}
	return c.owner
}

// errnoSeen is the error the application gets: the one the kernel
// reported on the socket, else the one the verdict implies.
func (c *conn) errnoSeen(v Verdict) int32 {
	switch {
	case v.Episode():
		return 0
	case c.errno != 0 && !tcp.KernelInternalErrno(c.errno):
		return c.errno
	}
	switch v {
	case PeerReset, PeerLostState:
		return int32(unix.ECONNRESET)
	case ConnectRefused:
		return int32(unix.ECONNREFUSED)
	case PeerClosed:
		if c.recvReset {
			return int32(unix.EPIPE) // the reset came after the peer's FIN
		}
	}
	return 0
}

// budgetOf is the deadline the kernel applies to c's outage.
func budgetOf(c *conn, ev *figures, v Verdict) Budget {
	s := ev.Settings
	// The exiting owner's close leaves the socket an orphan: from then on
	// the kernel counts tcp_orphan_retries for the outage in progress.
	orphan := c.orphan || v == LocalProcessExited && c.stallFirst != 0
	switch {
	case c.connecting:
		return Budget{Limit: tcp.SynBudget(s.SynRetries, ev.RTOMax), Setting: "tcp_syn_retries", Value: int(s.SynRetries)}
	case s.UserTimeout > 0:
		return Budget{Limit: s.UserTimeout, Setting: "TCP_USER_TIMEOUT", Value: int(s.UserTimeout.Milliseconds())}
	case orphan:
		return Budget{Limit: tcp.OrphanBudget(s.OrphanRetries, ev.RTO, ev.RTOMax), Setting: "tcp_orphan_retries", Value: int(s.OrphanRetries)}
	}
	return Budget{Limit: tcp.RetransmitBudget(s.Retries2, ev.RTOMax), Setting: "tcp_retries2", Value: int(s.Retries2)}
}

// outageFacts fills the counts and times of the outage behind n.
func (c *conn) outageFacts(n *Narrative, now time.Duration) {
	ev := &c.last
	stalled := func() {
		n.Retransmits = max(c.stallRetrans, int(ev.Retransmits))
		n.RTOs = append([]time.Duration(nil), c.rtos...)
		n.BackoffReverted = reverted(c.rtos)
		n.TimerRestarted = c.restartAt != 0
		n.FailedSends, n.FailedErrno = c.failedSends, c.failedErrno
		if c.silenceStart != 0 {
			n.Outage = now - c.silenceStart
		} else {
			n.Outage = ev.AckAge
		}
	}
	switch n.Verdict {
	case Stalled:
		stalled()
		n.GiveUpIn = max(c.projectGiveUp(n.Budget)-now, 0)
	case Recovered:
		// The answer that ended the outage answered the latest
		// retransmission or probe: only those before it went unanswered.
		if c.stallFirst != 0 {
			stalled()
			n.Retransmits = max(c.stallRetrans, int(c.timerRetransmits)) - 1
		} else {
			n.Probes = c.probes
			if c.answeredAt >= c.probeAt {
				n.Probes = max(c.probes-1, 0)
			}
			n.Outage = c.answeredAt - c.probeSince
		}
	case KeepaliveProbing:
		n.Probes = c.probes
		n.Outage = now - c.probeSince
		left := int(ev.Settings.KeepaliveProbes) - c.probes
		n.GiveUpIn = max(time.Duration(left+1)*ev.Settings.KeepaliveIntvl-(now-ev.Mono), 0)
	case KeepaliveTimeout:
		// The kernel kills when the unanswered probes reach TCP_KEEPCNT:
		// a kill seen without its probes, or one decided by the deadline
		// (deadline.go), had that many.
		n.Probes = max(c.probes, int(ev.Settings.KeepaliveProbes)*boolInt(c.kaKilled && c.probes == 0 || c.endUnseen && ev.Settings.UserTimeout == 0))
		if c.probeSince != 0 {
			n.Outage = now - c.probeSince
		} else {
			n.Outage = ev.AckAge
		}
	case RetransmitTimeout, HostUnreachable, PeerLostState:
		if c.connecting {
			n.Retransmits = c.synRetrans
			n.Outage = now - c.firstMono
			break
		}
		stalled()
		if n.Verdict == PeerLostState {
			n.Retransmits = max(n.Retransmits, c.recvRetransmits)
			n.Probes = max(c.probes, c.recvProbes)
		}
	case ConnectTimeout, ConnectAbandoned:
		// The SYN retransmissions, and how long the application waited
		// since connect().
		n.Retransmits = c.synRetrans
		n.Outage = now - c.firstMono
	case Untold:
		// What was known when the records stopped: the episode's figures.
		if c.stallFirst != 0 {
			stalled()
		} else {
			n.Probes = c.probes
			n.Outage = now - c.probeSince
		}
	case LocalProcessExited, LocalAbort:
		// An outage in progress when the owner died or gave up is part of
		// the story.
		if c.stallFirst != 0 {
			stalled()
		}
		if c.kaAnnounced {
			n.Probes = c.probes
		}
	}
}

// projectGiveUp is when the kernel will kill c if nothing changes, by its
// own arithmetic from the timer's latest expiry (see tcp.GiveUpAt). An
// RTO that stopped doubling means an ICMP unreachable reverts each backoff
// (RFC 6069): the interval stays. A revert still to come (a router's
// rate-limited ICMP, a neighbour entry failing seconds into the outage)
// cannot be foreseen: it can only bring the end earlier.
func (c *conn) projectGiveUp(b Budget) time.Duration {
	ev := &c.last
	doubling := !reverted(c.rtos)
	last, rto := c.timerAt, c.timerRTO
	if last == 0 {
		last, rto = ev.Mono, ev.RTO
	}
	if c.restartAt != 0 {
		// The timer restarted for a whole RTO when the held segment left
		// (heldSendLeft); the budget is checked first at that expiry,
		// and the RTO doubles after it as after any other.
		return tcp.GiveUpAt(c.retransStamp, b.Limit, c.restartAt+c.restartRTO, c.restartRTO, ev.RTOMax, doubling, b.Setting == "TCP_USER_TIMEOUT")
	}
	return tcp.GiveUpAt(c.retransStamp, b.Limit, last, rto, ev.RTOMax, doubling, b.Setting == "TCP_USER_TIMEOUT")
}

// reverted says whether the RTOs seen stopped doubling: the kernel reverts
// the backoff when an ICMP unreachable arrives during it (RFC 6069).
func reverted(rtos []time.Duration) bool {
	n := len(rtos)
	return n >= 2 && rtos[n-1] <= rtos[n-2] && rtos[n-1] < tcp.RTOMaxDefault
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// timeline is the connection's steps, as facts, in buf's array when it
// has room.
func (t *Tracker) timeline(buf []Step, c *conn) []Step {
	return t.timelineOf(buf, c.steps, c.firstMono, c.droppedSteps)
}

// timelineOf is timeline of a connection's steps, first seen at
// firstMono, dropped steps not kept.
func (t *Tracker) timelineOf(buf []Step, steps []step, firstMono time.Duration, dropped int) []Step {
	out := buf[:0]
	if cap(out) < len(steps) {
		out = make([]Step, 0, max(len(steps), 8))
	}
	out = out[:len(steps)]
	for i := range steps {
		// Field by field into the zeroed step: a literal would be built
		// aside and copied, a cost a connection's every step paid twice.
		s, o := &steps[i], &out[i]
		*o = Step{}
		o.At, o.Kind, o.Flags, o.State, o.Old = s.mono-firstMono, s.kind, s.flags, s.state, s.old
		o.CA, o.OldCA, o.Retransmits, o.Probes, o.Detail = s.ca, s.oldCA, s.retransmits, s.probes, s.detail
		o.RTO, o.Existing, o.Resent = time.Duration(s.rtoMs)*time.Millisecond, s.existing, s.resent
		if s.kind == wire.KindSendReset {
			o.ResetReason = t.cfg.ResetReasons.Name(s.detail)
		}
	}
	if len(out) > 0 {
		out[0].Dropped = dropped
	}
	return out
}

// endKey is a connection's 4-tuple, whatever its namespace: the other end
// of a connection between two namespaces of this host has it mirrored.
type endKey struct{ local, remote netip.AddrPort }

type endedConn struct {
	verdict Verdict
	mono    time.Duration
	netns   uint32
	cookie  uint64
}

const (
	maxEndedKept = 1 << 14
	// endedFor is how long a failure is kept to explain its other end: a
	// peer that was cut off learns of it when the path comes back.
	endedFor = 10 * time.Minute
)

// peerEnd remembers c's end when the kernel's own timers decided it, and
// finds how c's other end, when this host has it too, was told: a
// client's RST may come because the server's keepalive ended the
// connection long before, which only the two stories together say. Only
// those ends are kept: they come with outages, so the memory scales with
// failures, not with the churn of connections that abort or reset.
func (t *Tracker) peerEnd(c *conn, v Verdict, now time.Duration) *PeerEnd {
	if !c.local.IsValid() || !c.remote.IsValid() || c.remote.Port() == 0 {
		return nil
	}
	var found *PeerEnd
	if len(t.ended) > 0 { // with --all every normal end asks: mostly there is none to ask
		if e, ok := t.ended[endKey{c.remote, c.local}]; ok && e.cookie != c.cookie && e.mono <= now {
			found = &PeerEnd{Verdict: e.verdict, NetNS: e.netns, Before: now - e.mono}
		}
	}
	if v == KeepaliveTimeout || v == RetransmitTimeout || v == HostUnreachable {
		k := endKey{c.local, c.remote}
		if len(t.ended) >= maxEndedKept {
			if _, old, ok := t.endedOrder.Front(); ok {
				t.endedOrder.Pop()
				delete(t.ended, old)
			}
		}
		t.ended[k] = endedConn{verdict: v, mono: now, netns: c.netns, cookie: c.cookie}
		t.endedOrder.Push(now, k)
	}
	return found
}

// forgetEnded drops the failures told more than endedFor before now.
func (t *Tracker) forgetEnded(now time.Duration) {
	for {
		at, k, ok := t.endedOrder.Front()
		if !ok || now-at < endedFor {
			return
		}
		t.endedOrder.Pop()
		if e, ok := t.ended[k]; ok && e.mono == at {
			delete(t.ended, k)
		}
	}
}
