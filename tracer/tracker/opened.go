package tracker

import (
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// onListener keeps listening sockets apart from connections: their owner
// is remembered to name the owner of the connections they accept.
func (t *Tracker) onListener(ev *wire.Event) bool {
	if ev.Kind != wire.KindState {
		return ev.State == tcp.StateListen
	}
	key := listenKey{ev.NetNS, ev.Local.Port()}
	switch {
	case ev.State == tcp.StateListen:
		if ev.PID != 0 && (len(t.listeners) < maxListeners || t.listeners[key].PID != 0) {
			t.listeners[key] = Owner{PID: ev.PID, Comm: ev.Comm(), Source: wire.OwnerListener}
		}
		return true
	case ev.OldState == tcp.StateListen:
		// LISTEN -> CLOSE is the listener closing. LISTEN -> SYN_RECV
		// is a new child socket (cloned from the listener, with its
		// state): the listener stays.
		if ev.State == tcp.StateClose {
			delete(t.listeners, key)
		}
		return true
	}
	return false
}

// watchTimeWait remembers the 4-tuples the active closer leaves in TIME_WAIT
// (the full socket goes FIN_WAIT2/CLOSING -> CLOSE and a timewait socket
// takes its place), and tells when a new connection takes one over.
func (t *Tracker) watchTimeWait(c *conn, ev *wire.Event) {
	switch {
	case ev.State == tcp.StateClose && (ev.OldState == tcp.StateFinWait2 || ev.OldState == tcp.StateClosing):
		t.expireTimeWait(ev.Mono)
		if t.timeWait.Len() < maxTimeWaitKept {
			if t.timeWait.Full() {
				t.timeWait.PopFront()
			}
			t.timeWait.Set(twKeyOf(tupleKey{c.netns, c.local, c.remote}), ev.Mono)
		}
	case (ev.OldState == tcp.StateSynSent || ev.OldState == tcp.StateSynRecv) && ev.State == tcp.StateEstablished:
		key := twKeyOf(tupleKey{c.netns, c.local, c.remote})
		at, ok := t.timeWait.Take(key)
		if !ok {
			return
		}
		// Our connect() took over our own TIME_WAIT (tcp_tw_reuse), or
		// the peer's SYN reopened a 4-tuple our side held in TIME_WAIT
		// (tcp_timewait_state_process: TCP_TW_SYN, its sequence number or
		// timestamp newer than the old connection's).
		kind, causeUnseen := "time_wait_reuse", false
		if ev.OldState == tcp.StateSynRecv {
			kind, causeUnseen = "time_wait_syn_accepted", !t.cfg.TimeWaitSeen
			// A connect() of this host met this TIME_WAIT's old ACK and
			// reset it since the TIME_WAIT began: the RST ended it
			// (tcp_rfc1337=0, or the 60 s would not be over yet), and the
			// SYN that opened this connection reached the listener. The
			// TIME_WAIT took nothing over: told by the connecting side's
			// syn_answered_old_ack, and with rx_sk by time_wait_rst_ended.
			if resetAt, ok := t.oldAckResets[[2]netip.AddrPort{c.local, c.remote}]; len(t.oldAckResets) > 0 && ok && resetAt >= at {
				return
			}
		}
		if age := ev.Mono - at; age < timeWaitLen {
			t.cfg.Notices(&Notice{Time: ev.Time, Kind: kind, Cookie: c.cookie, Local: c.local,
				Remote: c.remote, NetNS: c.netns, Owner: t.ownerOf(c), Age: age, CgroupID: c.cgroupID,
				CauseUnseen: causeUnseen})
		}
	}
}

// expireTimeWait forgets the 4-tuples whose TIME_WAIT ended before now,
// oldest first. It used to scan the whole map whenever it was full: under
// churn to many peers, where 65,536 TIME_WAIT 4-tuples are younger than a
// minute, that was a scan of the whole map at every connection's close.
// The memory in time order makes it the expired entries only; it keeps
// the entries of reused (deleted) 4-tuples until they reach the front, at
// most twice the bound of live ones in all.
func (t *Tracker) expireTimeWait(now time.Duration) {
	for {
		_, at, ok := t.timeWait.Front()
		if !ok || now-at <= timeWaitLen {
			return
		}
		t.timeWait.PopFront()
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
	// RetransmitArmed says the retransmission timer was pending when the
	// table was read, to fire RetransmitIn later (sock_diag's
	// idiag_expires; 0: due, its handler not yet run). Not armed: unknown.
	RetransmitArmed bool
	RetransmitIn    time.Duration
	// ReadAt is the kernel's CLOCK_MONOTONIC when the table was read: the
	// moment of these figures, which can be well before AddExisting (0:
	// then).
	ReadAt   time.Duration
	Settings tcp.Settings // the namespace's; sock_diag does not show the socket's own
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
	if e.ReadAt > 0 && e.ReadAt < mono {
		// Told as of the figures' moment: records the kernel wrote since
		// (they wait in the ring buffer) come after it.
		wall, mono = wall.Add(e.ReadAt-mono), e.ReadAt
	}
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
	// No file, no process: an orphan (closed by its owner, the kernel
	// finishing the connection alone, on tcp_orphan_retries' budget).
	c.orphan = e.Inode == 0
	switch {
	case e.CAState == tcp.CALoss && e.Retransmits > 0:
		// The timer's latest expiry, as a record would have told it:
		// tcp_info's RTO is the next interval, already doubled, and the
		// timer fires RetransmitIn from now. A timer read as due is one
		// whole RTO past that expiry: dated at the reading instead, the
		// projection comes an RTO late (seen: 0.2 s, the next expiry 4 ms
		// after the reading).
		prior := ev
		prior.Kind = wire.KindRetransmit
		if prior.Backoff > 0 {
			prior.RTO /= 2
			prior.Backoff--
		}
		if e.RetransmitArmed && e.RetransmitIn <= e.RTO {
			prior.Mono = mono + e.RetransmitIn - e.RTO
			prior.AckAge = max(e.AckAge-(mono-prior.Mono), 0)
		}
		c.last.RTO = prior.RTO
		c.timerExpired(&prior)
		t.narrate(c, Stalled, false, mono)
	case e.Settings.KeepaliveOn && e.Probes > 0:
		c.probes = int(e.Probes)
		c.probeSince = mono - e.AckAge
	}
}
