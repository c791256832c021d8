package tracker

import (
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Config says what the tracker narrates and how much it may remember.
type Config struct {
	// All also narrates normal lifecycles (local_closed, peer_closed).
	// (Answered keepalive probes are not narratives: with --all the engine
	// tells them as events.)
	All bool
	// MaxConns bounds the connections remembered; the least recently
	// active is evicted beyond it. 0 means 262144.
	MaxConns int
	// Grace is how long the tracker holds a verdict before it tells it:
	// the reset and error report that follow a close arrive within it,
	// and narratives leave in time order. 0 means 50 ms.
	Grace time.Duration
	// ResetReasons names the kernel's reset reasons.
	ResetReasons tcp.ResetReasons
	// Owners finds the process holding a socket by its inode, for
	// connections whose owner the kernel could not see (accepted, found at
	// start-up, reported from a timer). Nil: only what the kernel said.
	Owners OwnerResolver
	// Notices, when set, receives notices (TIME_WAIT reuse); the tracker
	// then remembers recently closed 4-tuples to recognise them.
	Notices func(*Notice)
	// CloseWaitAfter is how long a socket may stay in CLOSE_WAIT before
	// its process is told as close_wait_stuck; 0 means
	// DefaultCloseWaitAfter, a negative value never.
	CloseWaitAfter time.Duration
	// DropsSeen: the kernel half watches the drop path (kfree_skb), so
	// narratives can say where the packets died; DropReasons names them.
	DropsSeen   bool
	DropReasons tcp.DropReasons
	// TimeWaitSeen: the drop path names the timewait socket a dropped SYN
	// or RST met (kfree_skb's rx_sk, 6.11+), so an RST that ends a
	// TIME_WAIT early is told (time_wait_rst_ended). Without it a new
	// connection on a 4-tuple still in TIME_WAIT cannot say whether the
	// TIME_WAIT took its SYN or an RST had ended it first.
	TimeWaitSeen bool
	// ReuseNarratives: emit, and whatever it hands a narrative to, keeps
	// neither the *Narrative nor its Timeline's array beyond the call (a
	// copy of the struct keeps a copy of the Timeline too): the tracker
	// then reuses both for the narratives it tells next (reuse.go).
	ReuseNarratives bool
}

// OwnerResolver finds the process that holds a socket.
type OwnerResolver interface {
	Owner(inode uint32) (pid uint32, comm string, ok bool)
}

// knownOwners is an OwnerResolver that can also answer from what it has
// already seen, without searching (owners.Index.Known). It is asked that
// way about a socket no process holds any more: a search (a scan of all of
// /proc) cannot find it, and under --all churn every server-side end is
// such a socket, asked about once each.
type knownOwners interface {
	Known(inode uint32) (pid uint32, comm string, ok bool)
}

// Tracker holds per-connection state and emits narratives. It is not safe
// for concurrent use: one goroutine feeds it events in kernel order.
type Tracker struct {
	cfg  Config
	emit func(*Narrative)

	// A connection is found by its socket cookie, or by its 4-tuple when
	// a record comes without one (the keepalive timer reads the cookie and
	// cannot make it): both lead to the same entry.
	byCookie map[uint64]*conn
	byTuple  map[tupleKey]*conn
	lru      conn // sentinel of a circular list, most recent first
	tracked  int
	peak     int

	listeners map[listenKey]Owner
	closing   timeQueue[*conn] // by closeDue; finalized after Grace
	pending   heldQueue        // told after Grace, in time order (held.go)
	evictions uint64
	counts    map[Verdict]int
	// timeWait holds the 4-tuples that entered TIME_WAIT, and when, in
	// time order (expireTimeWait); live ones up to maxTimeWaitKept.
	timeWait *fifoSet[twKey]
	// oldAckResets: the 4-tuples (as their peer sees them: local and
	// remote swapped) on which a connect() of this host met an old ACK
	// and reset it lately (syn_answered_old_ack), when. That RST ended
	// the peer's TIME_WAIT if the peer is this host too (another
	// namespace): its next connection there took over no TIME_WAIT.
	oldAckResets map[[2]netip.AddrPort]time.Duration
	// gone holds the cookies of sockets destroyed lately. The kernel can
	// still write about a socket after its destroy record: an orphan that
	// tcp_reset() destroys on data it cannot take then answers that data
	// with a reset. Such a record must not begin a second story.
	gone *goneCookies
	// ended holds the failures told lately, by 4-tuple: where tcpwatch sees
	// both ends of a connection (namespaces, containers of one node), the
	// other end's story explains this one's (see peerEnd).
	ended      map[endKey]endedConn
	endedOrder timeQueue[endKey]
	// wallAtZero turns kernel CLOCK_MONOTONIC into wall time (from the events).
	wallAtZero     time.Time
	lastEmit       time.Duration
	lossEpoch      uint64                    // bumped whenever the kernel reports lost records
	unjoined       uint32                    // bumped whenever the kernel could not mark a connection in trouble (DropsUnjoined)
	reconciled     uint64                    // connections dropped because the kernel no longer had them
	unseen         uint64                    // ... of which, ends the kernel does not report by design
	endsAtDeadline uint64                    // ends told at the kernel's deadline, the kill's records unseen
	cw             closeWaits                // sockets in CLOSE_WAIT (closewait.go)
	ports          map[portsKey]*portsFolded // connect() failures for want of a port (ports.go)
	probing        map[*conn]struct{}        // connections in a window-probe episode (probe.go)
	awaiting       map[*conn]struct{}        // connections in a told episode with a kernel deadline (deadline.go)
	// awaitingScan: when checkDeadlines next looks at them.
	awaitingScan time.Duration
	// checkWanted: an episode went silent past its deadline (deadline.go)
	checkWanted bool
	overflows   map[queueKey]*overflow // listeners' accept queues, by reading (listeners.go)
	// freeNarratives are told narratives to reuse; freeConns removed
	// entries to reuse, removed those waiting to be (reuse.go).
	freeNarratives     []*Narrative
	freeConns, removed []*conn
	freeHead           int // freeNarratives[freeHead:] wait, oldest first
	// scratch is the entry of a whole lifecycle (whole.go); unfoldOnly
	// turns that path off (tests compare the two).
	scratch    *conn
	unfoldOnly bool
	// building is where a normal end is narrated before it is held
	// compact, unpacked where it is unpacked to be told (held.go);
	// holdWhole turns that off (tests compare the two).
	building, unpacked *Narrative
	holdWhole          bool
	names              wire.Names // the owners' names, made once (observe)
}

type tupleKey struct {
	netns         uint32
	local, remote netip.AddrPort
}

type listenKey struct {
	netns uint32
	port  uint16
}

const (
	timeWaitLen     = 60 * time.Second // TCP_TIMEWAIT_LEN
	maxTimeWaitKept = 1 << 16
	maxListeners    = 1 << 16
	// goneFor is how long a destroyed socket's cookie is remembered: what
	// the kernel writes after the destroy comes in the same softirq.
	goneFor     = time.Second
	maxGoneKept = 1 << 16
	// closeWait bounds the wait for the destroy of a connection its owner
	// closed (see startClosing).
	closeWait = time.Second
)

// New returns a tracker that calls emit for every narrative. emit must not
// keep the *Narrative beyond the call.
func New(cfg Config, emit func(*Narrative)) *Tracker {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 1 << 18
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 50 * time.Millisecond
	}
	if cfg.ResetReasons == nil {
		cfg.ResetReasons = tcp.ResetReasons{}
	}
	t := &Tracker{cfg: cfg, emit: emit, byCookie: make(map[uint64]*conn), byTuple: make(map[tupleKey]*conn),
		listeners: make(map[listenKey]Owner), counts: make(map[Verdict]int), timeWait: newFifoSet(2*maxTimeWaitKept, hashTWKey),
		gone: newGoneCookies(), ended: make(map[endKey]endedConn)}
	t.lru.prev, t.lru.next = &t.lru, &t.lru
	return t
}

// Handle feeds one kernel event to the tracker. Each record goes to the
// phase of the connection's life it belongs to, in the files that follow
// this one in reading order: conn.go (finding and observing the
// connection), opened.go, outage.go, keepalive.go, closing.go, and told.go
// (the facts of a narrative, and its telling).
func (t *Tracker) Handle(ev *wire.Event) {
	if !ev.Time.IsZero() {
		t.wallAtZero = ev.Time.Add(-ev.Mono)
	}
	t.Tick(ev.Mono)
	if ev.Kind == wire.KindLifecycle {
		if !t.tellWhole(ev) {
			t.unfold(ev)
		}
		return
	}
	t.handle(ev)
}

// handle is Handle once the clock has moved; it returns the connection
// the record went to, if any.
func (t *Tracker) handle(ev *wire.Event) *conn {
	if ev.Flags&wire.FlagNoSocket != 0 {
		return nil // a reset for a 4-tuple with no socket: nothing to track
	}
	if ev.Kind == wire.KindDrop {
		t.onDrop(ev)
		return nil
	}
	if ev.Kind == wire.KindTimeWait {
		t.onTimeWait(ev)
		return nil
	}
	if t.onListener(ev) {
		return nil
	}
	c := t.lookup(ev)
	if c == nil {
		return nil
	}
	t.handleConn(c, ev)
	return c
}

// handleConn is handle once the record's connection is found.
func (t *Tracker) handleConn(c *conn, ev *wire.Event) {
	if c.done {
		if ev.Kind == wire.KindDestroy {
			t.remove(c)
			t.rememberGone(c.cookie, ev.Mono)
		}
		return
	}
	c.observe(ev, &t.names)
	// Without --all the kernel sends no record for an uneventful CLOSE
	// transition (a reset sent on close comes right after it), and even
	// a notable one is missing when the kernel skipped tw_set_state (a
	// timer that killed the socket while the program ran on the same CPU
	// for another socket: counted as programs skipped). A record that
	// shows the socket closed starts the end all the same, with the error
	// that closed it if the socket still holds it.
	if ev.State == tcp.StateClose && ev.Kind != wire.KindState && !c.closing {
		if c.errno == 0 && ev.SkErr != 0 {
			c.errno = ev.SkErr
		}
		t.startClosing(c, ev.Mono, c.closeOld)
	}

	switch ev.Kind {
	case wire.KindState:
		t.onState(c, ev)
	case wire.KindRetransmit:
		t.onRetransmit(c, ev)
	case wire.KindCongState:
		t.onCongState(c, ev)
	case wire.KindKeepalive:
		t.onKeepalive(c, ev)
	case wire.KindProbe0:
		t.onProbe0(c, ev)
	case wire.KindRecvReset:
		c.onRecvReset(ev)
	case wire.KindSendReset:
		t.onSendReset(c, ev)
	case wire.KindError:
		c.errno = ev.Detail
	case wire.KindDestroy:
		t.onDestroy(c, ev)
	}
}

// Tick finalizes connections whose CLOSE is older than the grace period
// (by then the reset and error report that follow a close have arrived)
// and tells the narratives that have waited out the grace, in time order.
func (t *Tracker) Tick(now time.Duration) {
	for {
		at, c, ok := t.closing.Front()
		if !ok || now-at < t.cfg.Grace {
			break
		}
		t.closing.Pop()
		c.queued--
		// Skip the finalized and the evicted, and an entry left from an
		// earlier close of the same connection (its current one is queued
		// under its own time).
		if c.closing && !c.done && c.prev != nil && c.closeDue == at {
			c.closing = false
			t.finalize(c, c.closeMono)
		}
		if c.prev == nil {
			t.removedConn(c)
		}
	}
	t.forgetGone(now)
	if len(t.ports) > 0 {
		t.portsTick(now, false)
	}
	t.forgetEnded(now)
	if len(t.probing) > 0 {
		t.expireWindowProbes(now)
	}
	if len(t.awaiting) > 0 && now >= t.awaitingScan {
		t.awaitingScan = now + awaitingScanEvery
		t.checkDeadlines(now)
	}
	t.release(now - t.cfg.Grace)
}

// release tells the pending narratives older than until, oldest first.
func (t *Tracker) release(until time.Duration) {
	for {
		h := t.pending.Front()
		if h == nil || h.at > until {
			return
		}
		if n := h.full; n != nil {
			t.pending.Pop()
			t.emit(n)
			t.told(n)
			continue
		}
		n := t.unpacked
		if n == nil || !t.cfg.ReuseNarratives {
			n = new(Narrative)
		}
		if t.cfg.ReuseNarratives {
			t.unpacked = n
		}
		t.unpack(n, &h.end, h.at)
		t.pending.Pop()
		t.emit(n)
	}
}

// RecordsLost tells the tracker that the kernel dropped records: every
// story told from now on for a connection tracked meanwhile may have a
// hole, and says so.
func (t *Tracker) RecordsLost() { t.lossEpoch++ }

// Flush ends tracking: connections that are closing are narrated, those
// still in an episode are narrated again with Final false, and every
// pending narrative is told.
func (t *Tracker) Flush(now time.Duration) {
	for {
		_, c, ok := t.closing.Front()
		if !ok {
			break
		}
		t.closing.Pop()
		c.queued--
		if c.closing && !c.done && c.prev != nil {
			c.closing = false
			t.finalize(c, c.closeMono)
		}
	}
	for c := t.lru.next; c != &t.lru; c = c.next {
		switch {
		case c.done:
		case c.stallFirst != 0:
			t.narrate(c, Stalled, false, now)
		case c.kaAnnounced:
			t.narrate(c, KeepaliveProbing, false, now)
		case c.windowVerdict() != "":
			t.narrate(c, c.windowVerdict(), false, now)
		}
	}
	t.closeWaitFlush(now)
	t.portsTick(now, true)
	t.release(now + time.Hour)
}

// Stats are the tracker's counters.
type Stats struct {
	Narratives map[string]int
	Evictions  uint64
	Tracked    int
	// Reconciled counts connections dropped because the kernel's socket
	// table no longer had them and their end was lost: see Reconcile.
	Reconciled uint64
	// EndedUnseen counts connections dropped the same way whose end the
	// kernel does not report by design: healthy connections that predate
	// tcpwatch end without a record in default mode.
	EndedUnseen uint64
	// EndsAtDeadline counts ends told at the kernel's deadline because the
	// kill's own records never arrived (narratives marked EndUnseen):
	// records missing that no kernel counter saw.
	EndsAtDeadline uint64
}

// Stats reports narratives by verdict, evictions and connections tracked.
func (t *Tracker) Stats() Stats {
	s := Stats{Narratives: make(map[string]int, len(t.counts)), Evictions: t.evictions, Tracked: t.tracked,
		Reconciled: t.reconciled - t.unseen, EndedUnseen: t.unseen,
		EndsAtDeadline: t.endsAtDeadline}
	for v, n := range t.counts {
		s.Narratives[string(v)] = n
	}
	return s
}
