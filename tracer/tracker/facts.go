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
// The narrative is returned for the caller to amend before it is told.
func (t *Tracker) narrate(c *conn, v Verdict, final bool, now time.Duration) *Narrative {
	ev := &c.last
	n := &Narrative{
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
		Timeline:    t.timeline(c),
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
	n.Errno = c.errnoSeen(v)
	n.Budget = budgetOf(c, ev)
	c.outageFacts(n, now)
	c.windowFacts(n, now)
	t.dropFacts(c, n)
	t.counts[v]++
	t.pending.Push(n.Mono, n)
	return n
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

// budgetOf is the deadline the kernel applies to c's outage.
func budgetOf(c *conn, ev *figures) Budget {
	s := ev.Settings
	switch {
	case c.connecting:
		return Budget{Limit: tcp.SynBudget(s.SynRetries, ev.RTOMax), Setting: "tcp_syn_retries", Value: int(s.SynRetries)}
	case s.UserTimeout > 0:
		return Budget{Limit: s.UserTimeout, Setting: "TCP_USER_TIMEOUT", Value: int(s.UserTimeout.Milliseconds())}
	case c.orphan:
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
		if c.stallFirst != 0 {
			stalled()
		} else {
			n.Probes = c.probes
			n.Outage = now - c.probeSince
		}
	case KeepaliveProbing:
		n.Probes = c.probes
		n.Outage = now - c.probeSince
		left := int(ev.Settings.KeepaliveProbes) - c.probes
		n.GiveUpIn = max(time.Duration(left+1)*ev.Settings.KeepaliveIntvl-(now-ev.Mono), 0)
	case KeepaliveTimeout:
		n.Probes = max(c.probes, int(ev.Settings.KeepaliveProbes)*boolInt(c.kaKilled && c.probes == 0))
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
	case ConnectTimeout:
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

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// reverted says whether the RTOs seen stopped doubling: the kernel reverts
// the backoff when an ICMP unreachable arrives during it (RFC 6069).
func reverted(rtos []time.Duration) bool {
	n := len(rtos)
	return n >= 2 && rtos[n-1] <= rtos[n-2] && rtos[n-1] < tcp.RTOMaxDefault
}

// projectGiveUp is when the kernel will kill c if nothing changes: the
// first RTO expiry at or past the first retransmission plus the budget.
// The RTO pattern is the one seen, so the projection holds still across
// the outage's expiries.
func (c *conn) projectGiveUp(b Budget) time.Duration {
	ev := &c.last
	deadline := c.stallFirst + b.Limit
	return tcp.ProjectGiveUp(deadline, ev.Mono, ev.RTO, ev.RTOMax, !reverted(c.rtos), b.Setting == "TCP_USER_TIMEOUT")
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

// timeline is the connection's steps, as facts.
func (t *Tracker) timeline(c *conn) []Step {
	out := make([]Step, len(c.steps))
	for i := range c.steps {
		s := &c.steps[i]
		out[i] = Step{At: s.mono - c.firstMono, Kind: s.kind, Flags: s.flags, State: s.state, Old: s.old,
			CA: s.ca, OldCA: s.oldCA, Retransmits: s.retransmits, Probes: s.probes, Detail: s.detail,
			RTO: time.Duration(s.rtoMs) * time.Millisecond, Existing: s.existing}
		if s.kind == wire.KindSendReset {
			out[i].ResetReason = t.cfg.ResetReasons.Name(s.detail)
		}
	}
	if len(out) > 0 {
		out[0].Dropped = c.droppedSteps
	}
	return out
}

// watchTimeWait remembers the 4-tuples the active closer leaves in TIME_WAIT
// (the full socket goes FIN_WAIT2/CLOSING -> CLOSE and a timewait socket
// takes its place), and tells when a new connection takes one over.
func (t *Tracker) watchTimeWait(c *conn, ev *wire.Event) {
	key := tupleKey{c.netns, c.local, c.remote}
	switch {
	case ev.State == tcp.StateClose && (ev.OldState == tcp.StateFinWait2 || ev.OldState == tcp.StateClosing):
		t.expireTimeWait(ev.Mono)
		if len(t.timeWait) < maxTimeWaitKept {
			t.timeWait[key] = ev.Mono
			t.timeWaitOrder.Push(ev.Mono, key)
		}
	case (ev.OldState == tcp.StateSynSent || ev.OldState == tcp.StateSynRecv) && ev.State == tcp.StateEstablished:
		at, ok := t.timeWait[key]
		if !ok {
			return
		}
		delete(t.timeWait, key)
		// Our connect() took over our own TIME_WAIT (tcp_tw_reuse), or
		// the peer's SYN reopened a 4-tuple our side held in TIME_WAIT
		// (tcp_timewait_state_process: TCP_TW_SYN, its sequence number or
		// timestamp newer than the old connection's).
		kind := "time_wait_reuse"
		if ev.OldState == tcp.StateSynRecv {
			kind = "time_wait_syn_accepted"
		}
		if age := ev.Mono - at; age < timeWaitLen {
			t.cfg.Notices(&Notice{Time: ev.Time, Kind: kind, Cookie: c.cookie, Local: c.local,
				Remote: c.remote, NetNS: c.netns, Owner: t.ownerOf(c), Age: age, CgroupID: c.cgroupID})
		}
	}
}

// expireTimeWait forgets the 4-tuples whose TIME_WAIT ended before now,
// oldest first. It used to scan the whole map whenever it was full: under
// churn to many peers, where 65,536 TIME_WAIT 4-tuples are younger than a
// minute, that was a scan of the whole map at every connection's close.
// The queue in time order makes it the expired entries only; it may hold
// entries the map no longer has (a reused 4-tuple), or has again with a
// later time, which it skips, and is kept within twice the map's bound.
func (t *Tracker) expireTimeWait(now time.Duration) {
	for {
		at, key, ok := t.timeWaitOrder.Front()
		if !ok || now-at <= timeWaitLen && t.timeWaitOrder.Len() < 2*maxTimeWaitKept {
			return
		}
		t.timeWaitOrder.Pop()
		if kept, ok := t.timeWait[key]; ok && kept == at {
			delete(t.timeWait, key)
		}
	}
}

// Existing is a connection that was there before tcpwatch started, as the
// kernel's socket table (sock_diag) and /proc describe it.
type Existing struct {
	Cookie        uint64
	NetNS         uint32
	Local, Remote netip.AddrPort
	State         tcp.State
	Inode         uint32
	Owner         Owner
	CAState       tcp.CAState
	Retransmits   uint8
	Backoff       uint8
	Probes        uint8
	RTO, RTOMax   time.Duration
	AckAge        time.Duration // since the peer last acknowledged anything
	Settings      tcp.Settings  // the namespace's; sock_diag does not show the socket's own
}

// AddExisting starts tracking a connection found at start-up. One already
// in an outage is narrated at once; one already probing is not, since its
// own keepalive settings arrive with the timer's next record.
func (t *Tracker) AddExisting(mono time.Duration, wall time.Time, e *Existing) {
	if e.State == tcp.StateListen {
		if e.Owner.PID != 0 && len(t.listeners) < maxListeners {
			t.listeners[listenKey{e.NetNS, e.Local.Port()}] = Owner{PID: e.Owner.PID, Comm: e.Owner.Comm, Source: wire.OwnerListener}
		}
		return
	}
	t.wallAtZero = wall.Add(-mono)
	ev := wire.Event{Mono: mono, Time: wall, Cookie: e.Cookie, NetNS: e.NetNS, Local: e.Local, Remote: e.Remote,
		Inode: e.Inode, State: e.State, CAState: e.CAState, Retransmits: e.Retransmits, Backoff: e.Backoff,
		ProbesOut: e.Probes, RTO: e.RTO, RTOMax: e.RTOMax, AckAge: e.AckAge, Settings: e.Settings}
	c := t.lookup(&ev)
	if c == nil || c.done {
		return
	}
	if e.Owner.PID != 0 {
		c.owner = e.Owner
	}
	c.local, c.remote, c.inode, c.state = e.Local, e.Remote, e.Inode, e.State
	c.sawPeerFIN = e.State == tcp.StateCloseWait || e.State == tcp.StateLastAck
	c.last = figures{Mono: mono, RTO: e.RTO, RTOMax: e.RTOMax, AckAge: e.AckAge, Settings: e.Settings,
		CAState: e.CAState, Retransmits: e.Retransmits}
	c.addStep(step{mono: mono, state: e.State, ca: e.CAState, retransmits: e.Retransmits, probes: e.Probes,
		rtoMs: uint32(e.RTO / time.Millisecond), existing: true})
	switch {
	case e.CAState == tcp.CALoss && e.Retransmits > 0:
		// tcp_info's RTO is the next one, already doubled.
		prior := ev
		prior.Kind = wire.KindRetransmit
		if prior.Backoff > 0 {
			prior.RTO /= 2
		}
		c.last.RTO = prior.RTO
		t.onRetransmit(c, &prior)
	case e.Settings.KeepaliveOn && e.Probes > 0:
		c.probes = int(e.Probes)
		c.probeSince = mono - e.AckAge
	}
}
