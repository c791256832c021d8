package tracker

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

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
	closing   timeQueue[*conn]      // by closeDue; finalized after Grace
	pending   timeQueue[*Narrative] // told after Grace, in time order
	evictions uint64
	counts    map[Verdict]int
	timeWait  map[tupleKey]time.Duration // 4-tuples that entered TIME_WAIT, and when
	// timeWaitOrder is timeWait in time order (expireTimeWait).
	timeWaitOrder timeQueue[tupleKey]
	// gone holds the cookies of sockets destroyed lately. The kernel can
	// still write about a socket after its destroy record: an orphan that
	// tcp_reset() destroys on data it cannot take then answers that data
	// with a reset. Such a record must not begin a second story.
	gone      map[uint64]struct{}
	goneOrder timeQueue[uint64]
	// wallAtZero turns kernel CLOCK_MONOTONIC into wall time (from the events).
	wallAtZero time.Time
	lastEmit   time.Duration
	lossEpoch  uint64                    // bumped whenever the kernel reports lost records
	reconciled uint64                    // connections dropped because the kernel no longer had them
	cw         closeWaits                // sockets in CLOSE_WAIT (closewait.go)
	ports      map[portsKey]*portsFolded // connect() failures for want of a port (ports.go)
	probing    map[*conn]struct{}        // connections in a window-probe episode (probe.go)
	overflows  map[listenKey]*overflow   // listeners' accept queues, by reading (listeners.go)
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
		listeners: make(map[listenKey]Owner), counts: make(map[Verdict]int), timeWait: make(map[tupleKey]time.Duration),
		gone: make(map[uint64]struct{})}
	t.lru.prev, t.lru.next = &t.lru, &t.lru
	return t
}

// maxSteps bounds a connection's timeline; older steps are dropped and counted.
const maxSteps = 32

// figures are what the narratives need of a connection's latest event.
type figures struct {
	Mono, RTO, RTOMax, AckAge time.Duration
	Settings                  tcp.Settings
	SkErrSoft                 int32
	CAState                   tcp.CAState
	Retransmits               uint8
}

// conn is what the tracker knows about one connection.
type conn struct {
	prev, next *conn // LRU

	cookie        uint64
	tuple         tupleKey
	inode         uint32
	cgroupID      uint64 // the socket's cgroup v2 id, from its records
	local, remote netip.AddrPort
	netns         uint32
	owner         Owner
	destroyed     bool // its destroy record came: no process holds it
	firstMono     time.Duration
	last          figures // from the latest event
	steps         []step
	droppedSteps  int
	lossEpoch     uint64

	// toldStall and toldProbing identify the episode last narrated (its
	// stallFirst, its probeSince): a narrative of another one begins it.
	toldStall, toldProbing time.Duration

	state      tcp.State
	connecting bool // seen in SYN_SENT/SYN_RECV and never established
	orphan     bool
	sawPeerFIN bool
	closing    bool
	closeMono  time.Duration
	closeDue   time.Duration // when the closing queue finalizes it (without a destroy)
	closeOld   tcp.State
	done       bool // narrated as final; kept to swallow the socket's last events

	// The current outage: RTO retransmissions with no ACK.
	stallFirst   time.Duration // first retransmission of the outage (kernel's retrans_stamp)
	silenceStart time.Duration // when the peer went silent
	stallRetrans int
	rtos         []time.Duration
	failedSends  int   // retransmissions that never left this host
	failedErrno  int32 // ... and the error of the last one
	synRetrans   int
	drops        connDrops   // this host's drops of its packets, during the episode (drops.go)
	window       windowProbe // the zero-window probe timer's episode (probe.go)

	// Keepalive.
	probes      int
	probeSince  time.Duration
	kaKilled    bool
	kaAnnounced bool

	sentReset        bool
	sentReason       int32
	sentInKeepalive  bool // the reset was the keepalive timer giving up
	recvReset        bool
	recvResetState   tcp.State
	recvAfterSilence bool
	recvRetransmits  int
	recvProbes       int
	errno            int32
	exiting          bool
	exitCode         uint32
}

// step is one kernel event of a connection's timeline, kept small: a
// tracker with --all holds one timeline per connection on the host.
type step struct {
	mono        time.Duration
	detail      int32
	rtoMs       uint32
	kind        wire.Kind
	flags       wire.Flags
	state, old  tcp.State
	ca, oldCA   tcp.CAState
	retransmits uint8
	probes      uint8
	existing    bool
}

func tupleOf(ev *wire.Event) (tupleKey, bool) {
	if ev.Local.Port() == 0 || ev.Remote.Port() == 0 {
		return tupleKey{}, false
	}
	return tupleKey{ev.NetNS, ev.Local, ev.Remote}, true
}

func (t *Tracker) touch(c *conn) {
	c.prev.next, c.next.prev = c.next, c.prev
	c.next, c.prev = t.lru.next, &t.lru
	t.lru.next.prev = c
	t.lru.next = c
}

func (t *Tracker) remove(c *conn) {
	if c.prev == nil {
		return
	}
	c.prev.next, c.next.prev = c.next, c.prev
	c.prev, c.next = nil, nil
	if c.cookie != 0 && t.byCookie[c.cookie] == c {
		delete(t.byCookie, c.cookie)
	}
	if t.byTuple[c.tuple] == c {
		delete(t.byTuple, c.tuple)
	}
	t.tracked--
	// Go maps keep their buckets: rebuild them once they hold a quarter
	// of their peak, so memory returns after a burst.
	if t.peak > 4096 && t.tracked < t.peak/4 {
		t.byCookie = maps(t.byCookie)
		t.byTuple = maps(t.byTuple)
		t.peak = t.tracked
	}
}

func maps[K comparable](m map[K]*conn) map[K]*conn {
	fresh := make(map[K]*conn, len(m))
	for k, v := range m {
		fresh[k] = v
	}
	return fresh
}

// lookup finds ev's connection, or starts tracking it.
func (t *Tracker) lookup(ev *wire.Event) *conn {
	if ev.Cookie != 0 {
		if c, ok := t.byCookie[ev.Cookie]; ok {
			t.touch(c)
			return c
		}
	}
	tk, hasTuple := tupleOf(ev)
	if hasTuple {
		if c, ok := t.byTuple[tk]; ok && (c.cookie == 0 || ev.Cookie == 0 || c.cookie == ev.Cookie) {
			if c.cookie == 0 && ev.Cookie != 0 {
				c.cookie = ev.Cookie
				t.byCookie[c.cookie] = c
			}
			t.touch(c)
			return c
		}
	}
	if ev.Kind == wire.KindDestroy {
		return nil
	}
	if _, ok := t.gone[ev.Cookie]; ok && ev.Cookie != 0 {
		return nil // written after the socket's destroy: its story is over
	}
	if ev.Cookie == 0 && !hasTuple {
		// Nothing names the connection: no later record could find it,
		// so an entry would only tell a one-record story and linger.
		return nil
	}
	for t.tracked >= t.cfg.MaxConns {
		t.remove(t.lru.prev)
		t.evictions++
	}
	c := &conn{cookie: ev.Cookie, netns: ev.NetNS, firstMono: ev.Mono, state: ev.State, lossEpoch: t.lossEpoch}
	if ev.FirstSeen != 0 && ev.FirstSeen < ev.Mono {
		c.firstMono = ev.FirstSeen
	}
	c.prev, c.next = &t.lru, t.lru.next
	t.lru.next.prev = c
	t.lru.next = c
	if c.cookie != 0 {
		t.byCookie[c.cookie] = c
	}
	if hasTuple {
		c.tuple = tk
		t.byTuple[tk] = c // a newer socket on the same 4-tuple takes it over
	}
	t.tracked++
	t.peak = max(t.peak, t.tracked)
	return c
}

// Handle feeds one kernel event to the tracker.
func (t *Tracker) Handle(ev *wire.Event) {
	if !ev.Time.IsZero() {
		t.wallAtZero = ev.Time.Add(-ev.Mono)
	}
	t.Tick(ev.Mono)
	if ev.Flags&wire.FlagNoSocket != 0 {
		return // a reset for a 4-tuple with no socket: nothing to track
	}
	if ev.Kind == wire.KindDrop {
		t.onDrop(ev)
		return
	}
	if t.onListener(ev) {
		return
	}
	c := t.lookup(ev)
	if c == nil {
		return
	}
	if c.done {
		if ev.Kind == wire.KindDestroy {
			t.remove(c)
			t.rememberGone(c.cookie, ev.Mono)
		}
		return
	}
	c.observe(ev)
	// Without --all the kernel sends no record for an uneventful CLOSE
	// transition (a reset sent on close comes right after it): a record
	// that shows the socket closed starts the end all the same.
	if ev.State == tcp.StateClose && ev.Kind != wire.KindState && !c.closing {
		t.startClosing(c, ev.Mono, c.closeOld)
	}

	switch ev.Kind {
	case wire.KindState:
		t.onState(c, ev)
	case wire.KindRetransmit:
		t.onRetransmit(c, ev)
	case wire.KindCongState:
		if ev.OldCA == tcp.CALoss && ev.CAState != tcp.CALoss && c.stallFirst != 0 {
			t.narrate(c, Recovered, false, ev.Mono)
			c.endStall()
		}
	case wire.KindRecvReset:
		c.recvReset = true
		c.recvResetState = ev.State
		c.recvRetransmits = int(ev.Retransmits)
		c.recvProbes = int(ev.ProbesOut)
		// A reset that answers retransmissions or probes sent into silence
		// comes from a peer that no longer knows the connection.
		c.recvAfterSilence = ev.Retransmits > 0 || ev.ProbesOut > 0 || c.stallFirst != 0 || c.probes > 0
	case wire.KindSendReset:
		if ev.Flags&wire.FlagReplyReset != 0 {
			break
		}
		c.sentReset, c.sentReason = true, ev.Detail
		c.sentInKeepalive = ev.Flags&wire.FlagInKeepalive != 0
		if ev.Flags&wire.FlagOwnerExiting != 0 && !c.sawPeerFIN {
			t.finish(c, LocalProcessExited, ev.Mono)
		}
	case wire.KindError:
		c.errno = ev.Detail
	case wire.KindKeepalive:
		t.onKeepalive(c, ev)
	case wire.KindProbe0:
		t.onProbe0(c, ev)
	case wire.KindDestroy:
		if c.closing {
			t.finalize(c, c.closeMono)
		}
		t.remove(c)
		t.rememberGone(c.cookie, ev.Mono)
	}
}

// rememberGone keeps a destroyed socket's cookie for goneFor.
func (t *Tracker) rememberGone(cookie uint64, mono time.Duration) {
	if cookie == 0 {
		return
	}
	if len(t.gone) >= maxGoneKept {
		_, old, _ := t.goneOrder.Front()
		t.goneOrder.Pop()
		delete(t.gone, old)
	}
	t.gone[cookie] = struct{}{}
	t.goneOrder.Push(mono, cookie)
}

// forgetGone drops the cookies destroyed more than goneFor before now.
func (t *Tracker) forgetGone(now time.Duration) {
	for {
		at, cookie, ok := t.goneOrder.Front()
		if !ok || now-at < goneFor {
			return
		}
		t.goneOrder.Pop()
		delete(t.gone, cookie)
	}
}

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

// observe records what every event tells about the connection.
func (c *conn) observe(ev *wire.Event) {
	// Keep the addresses the connection had: a failed connect() clears
	// the local address before its last records.
	if ev.Local.Port() != 0 && !ev.Local.Addr().IsUnspecified() || !c.local.IsValid() {
		c.local = ev.Local
	}
	if ev.Remote.Port() != 0 || !c.remote.IsValid() {
		c.remote = ev.Remote
	}
	if ev.Inode != 0 {
		c.inode = ev.Inode
	}
	if ev.CgroupID != 0 {
		c.cgroupID = ev.CgroupID
	}
	if ev.PID != 0 && (ev.PID != c.owner.PID || c.owner.Source == wire.OwnerListener) {
		c.owner = Owner{PID: ev.PID, Comm: ev.Comm(), Source: ownerSource(ev.Owner)}
	}
	if ev.Flags&wire.FlagOrphan != 0 {
		c.orphan = true
	}
	if ev.Kind == wire.KindDestroy {
		c.destroyed = true
	}
	if ev.Flags&wire.FlagOwnerExiting != 0 {
		c.exiting, c.exitCode = true, ev.ExitCode
	}
	switch ev.State {
	case tcp.StateSynSent, tcp.StateSynRecv:
		if c.state == 0 || c.connecting || c.state == tcp.StateSynSent || c.state == tcp.StateSynRecv {
			c.connecting = true
		}
	case tcp.StateCloseWait, tcp.StateLastAck:
		c.sawPeerFIN = true
	}
	if ev.Kind == wire.KindState {
		if ev.OldState == tcp.StateCloseWait || ev.OldState == tcp.StateLastAck {
			c.sawPeerFIN = true
		}
		// A handshake that ends in CLOSE never established: in default
		// mode its CLOSE may be the first record the kernel sends.
		if ev.State == tcp.StateClose && (ev.OldState == tcp.StateSynSent || ev.OldState == tcp.StateSynRecv) {
			c.connecting = true
		}
		if ev.State == tcp.StateEstablished || (ev.OldState == tcp.StateEstablished) {
			c.connecting = false
		}
	} else if ev.State == tcp.StateEstablished {
		c.connecting = false
	}
	if ev.Kind != wire.KindKeepalive || ev.Flags&wire.FlagKeepaliveKill == 0 {
		c.state = ev.State
	}
	c.last = figures{Mono: ev.Mono, RTO: ev.RTO, RTOMax: ev.RTOMax, AckAge: ev.AckAge, Settings: ev.Settings,
		SkErrSoft: ev.SkErrSoft, CAState: ev.CAState, Retransmits: ev.Retransmits}
	c.addStep(step{mono: ev.Mono, kind: ev.Kind, flags: ev.Flags, state: ev.State, old: ev.OldState,
		ca: ev.CAState, oldCA: ev.OldCA, retransmits: ev.Retransmits, probes: ev.ProbesOut,
		detail: ev.Detail, rtoMs: uint32(ev.RTO / time.Millisecond)})
}

func (c *conn) addStep(s step) {
	if len(c.steps) == maxSteps {
		copy(c.steps, c.steps[1:])
		c.steps = c.steps[:maxSteps-1]
		c.droppedSteps++
	}
	c.steps = append(c.steps, s)
}

// ownerSource is how a record's owner was learned: the kernel's word for
// connect and close; any other owner it names was read from /proc.
func ownerSource(s wire.OwnerSource) wire.OwnerSource {
	switch s {
	case wire.OwnerConnect, wire.OwnerClose:
		return s
	}
	return wire.OwnerProcfs
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
	t.closing.Push(c.closeDue, c)
}

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

func (t *Tracker) onRetransmit(c *conn, ev *wire.Event) {
	if ev.State == tcp.StateSynSent || ev.State == tcp.StateSynRecv {
		c.synRetrans = max(c.synRetrans+1, int(ev.Retransmits))
		return
	}
	if ev.CAState != tcp.CALoss && ev.Flags&wire.FlagFromTimer == 0 {
		return // fast retransmit or loss probe: routine
	}
	if c.stallFirst == 0 {
		c.stallFirst = firstRetransmit(ev)
		// The peer went silent about one RTO before the first
		// retransmission (the original transmission), not at the last ACK
		// of an idle connection.
		c.silenceStart = c.stallFirst - firstRTO(ev)
		if acked := ev.Mono - ev.AckAge; ev.AckAge > 0 && acked > c.silenceStart {
			c.silenceStart = acked
		}
		c.stallRetrans = 0
		c.rtos = c.rtos[:0]
	}
	c.stallRetrans++
	if ev.Detail != 0 {
		c.failedSends, c.failedErrno = c.failedSends+1, -ev.Detail
	}
	if len(c.rtos) < 24 {
		c.rtos = append(c.rtos, ev.RTO)
	}
	t.narrate(c, Stalled, false, ev.Mono)
}

// firstRetransmit is when the outage's first RTO retransmission went out.
// Normally this event is it; when tcpwatch started mid-outage, walk back
// through the halving RTOs the kernel used before.
func firstRetransmit(ev *wire.Event) time.Duration {
	first := ev.Mono
	rto := ev.RTO
	for i := 1; i < int(ev.Retransmits); i++ {
		rto /= 2
		first -= rto
	}
	return first
}

// firstRTO is the RTO that expired to send the first retransmission.
func firstRTO(ev *wire.Event) time.Duration {
	rto := ev.RTO
	for i := 1; i < int(ev.Retransmits); i++ {
		rto /= 2
	}
	if ev.Backoff > 0 && ev.Retransmits > 0 {
		rto /= 2 // the record's RTO is already doubled for the next expiry
	}
	return rto
}

func (c *conn) endStall() {
	c.stallFirst, c.silenceStart, c.stallRetrans, c.failedSends = 0, 0, 0, 0
	c.rtos = c.rtos[:0]
	c.drops.reset()
}

func (t *Tracker) onKeepalive(c *conn, ev *wire.Event) {
	switch {
	case ev.Flags&wire.FlagKeepaliveKill != 0:
		c.kaKilled = true
		c.probes = max(c.probes, int(ev.ProbesOut))
		if c.probeSince == 0 {
			c.probeSince = ev.Mono - ev.AckAge
		}
		if c.closing {
			t.finalize(c, c.closeMono)
		}
	case ev.Flags&wire.FlagProbeSent != 0:
		if c.probes == 0 || c.probeSince == 0 {
			// The first probe went out keepalive_time after the last ACK.
			c.probeSince = ev.Mono - ev.AckAge
		}
		c.probes = int(ev.ProbesOut)
		// A healthy peer answers the first probe at once: only a second
		// probe (the first went unanswered a whole interval) is news.
		if c.probes >= 2 {
			c.kaAnnounced = true
			t.narrate(c, KeepaliveProbing, false, ev.Mono)
		}
	case ev.Flags&wire.FlagProbeAnswered != 0:
		if c.kaAnnounced {
			t.narrate(c, Recovered, false, ev.Mono)
		}
		c.probes, c.probeSince, c.kaAnnounced = 0, 0, false
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
		// Skip the finalized and the evicted, and an entry left from an
		// earlier close of the same connection (its current one is queued
		// under its own time).
		if c.closing && !c.done && c.prev != nil && c.closeDue == at {
			c.closing = false
			t.finalize(c, c.closeMono)
		}
	}
	t.forgetGone(now)
	if len(t.ports) > 0 {
		t.portsTick(now, false)
	}
	if len(t.probing) > 0 {
		t.expireWindowProbes(now)
	}
	t.release(now - t.cfg.Grace)
}

// release tells the pending narratives older than until, oldest first.
func (t *Tracker) release(until time.Duration) {
	for {
		at, n, ok := t.pending.Front()
		if !ok || at > until {
			return
		}
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
	// table no longer had them (their end was lost): see Reconcile.
	Reconciled uint64
}

// Stats reports narratives by verdict, evictions and connections tracked.
func (t *Tracker) Stats() Stats {
	s := Stats{Narratives: make(map[string]int, len(t.counts)), Evictions: t.evictions, Tracked: t.tracked,
		Reconciled: t.reconciled}
	for v, n := range t.counts {
		s.Narratives[string(v)] = n
	}
	return s
}

// finalize decides why a connection that reached CLOSE died.
func (t *Tracker) finalize(c *conn, now time.Duration) {
	t.finish(c, c.finalVerdict(), now)
}

// finish tells a connection's final verdict, once: nothing is told about
// it after that.
func (t *Tracker) finish(c *conn, v Verdict, now time.Duration) {
	if c.done {
		return
	}
	c.done, c.closing = true, false
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
