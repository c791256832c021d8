package tracker

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Config says what the tracker narrates and how much it may remember.
type Config struct {
	// All also narrates normal lifecycles (local_closed, peer_closed).
	All bool
	// MaxConns bounds the connections remembered; the least recently
	// active is evicted beyond it. 0 means 262144.
	MaxConns int
	// Grace is how long after a connection enters CLOSE the tracker waits
	// for the reset and error report that the kernel emits right after
	// the state change. 0 means 50 ms.
	Grace time.Duration
	// ResetReasons names the kernel's reset reasons.
	ResetReasons tcp.ResetReasons
	// Notices, when set, receives notices (TIME_WAIT reuse); the tracker
	// then remembers recently closed 4-tuples to recognise them.
	Notices func(*Notice)
}

// Tracker holds per-connection state and emits narratives. It is not safe
// for concurrent use: one goroutine feeds it events in kernel order.
type Tracker struct {
	cfg       Config
	emit      func(*Narrative)
	conns     map[uint64]*conn
	lru       conn // sentinel of a circular list, most recent first
	closing   []*conn
	evictions uint64
	counts    map[Verdict]int
	timeWait  map[tupleKey]time.Duration // 4-tuples that entered TIME_WAIT, and when
	// wallAtZero turns kernel CLOCK_MONOTONIC into wall time (from the events).
	wallAtZero time.Time
	// peakConns is the most connections tracked since the map was last
	// rebuilt: Go maps keep their buckets, so a map that held a peak is
	// rebuilt when it shrinks to a quarter of it.
	peakConns int
}

type tupleKey struct {
	netns         uint32
	local, remote netip.AddrPort
}

const (
	timeWaitLen     = 60 * time.Second // TCP_TIMEWAIT_LEN
	maxTimeWaitKept = 1 << 16
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
	t := &Tracker{cfg: cfg, emit: emit, conns: make(map[uint64]*conn), counts: make(map[Verdict]int),
		timeWait: make(map[tupleKey]time.Duration)}
	t.lru.prev, t.lru.next = &t.lru, &t.lru
	return t
}

// maxSteps bounds a connection's timeline; older steps are dropped and counted.
const maxSteps = 32

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
}

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
	key        uint64
	prev, next *conn // LRU

	cookie        uint64
	local, remote netip.AddrPort
	netns         uint32
	pid           uint32
	comm          string
	firstMono     time.Duration
	last          figures // from the latest event
	steps         []step
	droppedSteps  int

	state      tcp.State
	listener   bool // a listening socket: never a connection to narrate
	sawPeerFIN bool
	closing    bool
	closeMono  time.Duration
	closeOld   tcp.State
	done       bool // narrated as final; kept to swallow the socket's last events

	// The current outage: RTO retransmissions with no ACK.
	stallFirst   time.Duration // first retransmission of the outage (kernel's retrans_stamp)
	silenceStart time.Duration // last ACK before the outage
	stallRetrans int
	rtos         []time.Duration
	failedSends  int   // retransmissions that never left this host (6.17+ reports why)
	failedErrno  int32 // ... and the error of the last one
	synRetrans   int

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
	appErrno         int32
	appSend          bool
	exiting          bool
	exitCode         uint32
}

func connKey(ev *wire.Event) uint64 {
	if ev.Cookie != 0 {
		return ev.Cookie
	}
	// No cookie (a socket the kernel never gave one): the tuple is the identity.
	h := fnv.New64a()
	b := ev.Local.Addr().As16()
	h.Write(b[:])
	b = ev.Remote.Addr().As16()
	h.Write(b[:])
	h.Write([]byte{byte(ev.Local.Port() >> 8), byte(ev.Local.Port()), byte(ev.Remote.Port() >> 8),
		byte(ev.Remote.Port()), byte(ev.NetNS >> 24), byte(ev.NetNS >> 16), byte(ev.NetNS >> 8), byte(ev.NetNS)})
	return h.Sum64() | 1<<63
}

func (t *Tracker) touch(c *conn) {
	c.prev.next, c.next.prev = c.next, c.prev
	c.next, c.prev = t.lru.next, &t.lru
	t.lru.next.prev = c
	t.lru.next = c
}

func (t *Tracker) remove(c *conn) {
	c.prev.next, c.next.prev = c.next, c.prev
	c.prev, c.next = nil, nil
	delete(t.conns, c.key)
	if n := len(t.conns); t.peakConns > 4096 && n < t.peakConns/4 {
		fresh := make(map[uint64]*conn, n)
		for k, v := range t.conns {
			fresh[k] = v
		}
		t.conns, t.peakConns = fresh, n
	}
}

func (t *Tracker) lookup(ev *wire.Event) *conn {
	key := connKey(ev)
	if c, ok := t.conns[key]; ok {
		t.touch(c)
		return c
	}
	if ev.Kind == wire.KindDestroy {
		return nil
	}
	for len(t.conns) >= t.cfg.MaxConns {
		oldest := t.lru.prev
		t.remove(oldest)
		t.evictions++
	}
	c := &conn{key: key, cookie: ev.Cookie, netns: ev.NetNS, firstMono: ev.Mono, state: ev.State}
	if ev.FirstSeen != 0 && ev.FirstSeen < ev.Mono {
		c.firstMono = ev.FirstSeen
	}
	c.prev, c.next = &t.lru, t.lru.next
	t.lru.next.prev = c
	t.lru.next = c
	t.conns[key] = c
	t.peakConns = max(t.peakConns, len(t.conns))
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
	c := t.lookup(ev)
	if c == nil {
		return
	}
	if c.done {
		if ev.Kind == wire.KindDestroy {
			t.remove(c)
		}
		return
	}
	c.observe(ev)
	// Without --all the kernel sends no record for an uneventful CLOSE
	// transition (a reset sent on close comes right after it): a record
	// that shows the socket closed starts the end all the same.
	if ev.State == tcp.StateClose && ev.Kind != wire.KindState && !c.closing && ev.Kind != wire.KindSnapshot {
		c.closing, c.closeMono = true, ev.Mono
		t.closing = append(t.closing, c)
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
		c.sentInKeepalive = ev.Flags&wire.FlagInKeepalive != 0 ||
			t.cfg.ResetReasons.Name(ev.Detail) == "TCP_KEEPALIVE_TIMEOUT"
		if ev.Flags&wire.FlagOwnerExiting != 0 {
			t.finish(c, LocalProcessExited, ev.Mono)
		}
	case wire.KindError:
		c.errno = ev.Detail
	case wire.KindAppError:
		if c.appErrno == 0 { // the first error is the one that tells
			c.appErrno, c.appSend = -ev.Detail, ev.Flags&wire.FlagAppSend != 0
		}
	case wire.KindKeepalive:
		t.onKeepalive(c, ev)
	case wire.KindSnapshot:
		t.onSnapshot(c, ev)
	case wire.KindDestroy:
		if c.closing {
			t.finalize(c, c.closeMono)
		}
		t.remove(c)
	}
}

// observe records what every event tells about the connection.
func (c *conn) observe(ev *wire.Event) {
	if ev.Local.Port() != 0 || !c.local.IsValid() {
		c.local = ev.Local
	}
	if ev.Remote.Port() != 0 || !c.remote.IsValid() {
		c.remote = ev.Remote
	}
	if ev.PID != 0 && ev.PID != c.pid {
		c.pid, c.comm = ev.PID, ev.Comm()
	}
	if ev.Flags&wire.FlagOwnerExiting != 0 {
		c.exiting, c.exitCode = true, ev.ExitCode
	}
	if ev.Kind != wire.KindKeepalive || ev.Flags&wire.FlagKeepaliveKill == 0 {
		c.state = ev.State
	}
	c.last = figures{Mono: ev.Mono, RTO: ev.RTO, RTOMax: ev.RTOMax, AckAge: ev.AckAge, Settings: ev.Settings,
		SkErrSoft: ev.SkErrSoft, CAState: ev.CAState, Retransmits: ev.Retransmits}
	s := step{mono: ev.Mono, kind: ev.Kind, flags: ev.Flags, state: ev.State, old: ev.OldState,
		ca: ev.CAState, oldCA: ev.OldCA, retransmits: ev.Retransmits, probes: ev.ProbesOut,
		detail: ev.Detail, rtoMs: uint32(ev.RTO / time.Millisecond)}
	if len(c.steps) == maxSteps {
		copy(c.steps, c.steps[1:])
		c.steps = c.steps[:maxSteps-1]
		c.droppedSteps++
	}
	c.steps = append(c.steps, s)
}

func (t *Tracker) onState(c *conn, ev *wire.Event) {
	if ev.State == tcp.StateListen || (ev.OldState == tcp.StateListen && ev.State == tcp.StateClose) {
		c.listener = true
	}
	if t.cfg.Notices != nil {
		t.watchTimeWait(c, ev)
	}
	switch {
	case ev.State == tcp.StateCloseWait:
		c.sawPeerFIN = true
	case ev.OldState == tcp.StateEstablished && ev.State == tcp.StateFinWait1 && ev.Flags&wire.FlagOwnerExiting != 0:
		t.finish(c, LocalProcessExited, ev.Mono)
	case ev.State == tcp.StateClose:
		if ev.SkErr != 0 {
			c.errno = ev.SkErr
		}
		if !c.closing {
			c.closing, c.closeMono, c.closeOld = true, ev.Mono, ev.OldState
			t.closing = append(t.closing, c)
		}
	}
}

func (t *Tracker) onRetransmit(c *conn, ev *wire.Event) {
	if ev.State == tcp.StateSynSent || ev.State == tcp.StateSynRecv {
		c.synRetrans++
		return
	}
	if ev.CAState != tcp.CALoss {
		return // fast retransmit or loss probe: routine
	}
	if c.stallFirst == 0 {
		c.stallFirst = estimateFirstRetransmit(ev)
		c.silenceStart = ev.Mono - ev.AckAge
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

// watchTimeWait remembers the 4-tuples the active closer leaves in TIME_WAIT
// (the full socket goes FIN_WAIT2/CLOSING -> CLOSE and a timewait socket
// takes its place), and tells when a new connection takes one over.
func (t *Tracker) watchTimeWait(c *conn, ev *wire.Event) {
	key := tupleKey{c.netns, c.local, c.remote}
	switch {
	case ev.State == tcp.StateClose && (ev.OldState == tcp.StateFinWait2 || ev.OldState == tcp.StateClosing):
		if len(t.timeWait) >= maxTimeWaitKept {
			for k, at := range t.timeWait {
				if ev.Mono-at > timeWaitLen {
					delete(t.timeWait, k)
				}
			}
		}
		if len(t.timeWait) < maxTimeWaitKept {
			t.timeWait[key] = ev.Mono
		}
	case ev.OldState == tcp.StateSynSent && ev.State == tcp.StateEstablished:
		at, ok := t.timeWait[key]
		if !ok {
			return
		}
		delete(t.timeWait, key)
		if age := ev.Mono - at; age < timeWaitLen {
			t.cfg.Notices(&Notice{
				Time: ev.Time, Kind: "time_wait_reuse", Cookie: c.cookie, Local: c.local, Remote: c.remote,
				NetNS: c.netns, PID: c.pid, Comm: c.comm,
				Summary: fmt.Sprintf("a new connection took over a 4-tuple still in TIME_WAIT (closed %s ago)", secs(age)),
				Explanation: fmt.Sprintf("The earlier connection on %s -> %s closed actively %s ago; its TIME_WAIT (60 s, TCP_TIMEWAIT_LEN) guards against old duplicates. connect() reused it anyway, which tcp_tw_reuse allows for outgoing connections once the TIME_WAIT is over a second old, with TCP timestamps to tell old segments from new (PAWS).",
					c.local, c.remote, secs(age)),
			})
		}
	}
}

// onSnapshot picks up a connection that was already in trouble when
// tcpwatch started: narrate it at once instead of at its next timer.
func (t *Tracker) onSnapshot(c *conn, ev *wire.Event) {
	if ev.State == tcp.StateCloseWait {
		c.sawPeerFIN = true
	}
	switch {
	case ev.CAState == tcp.CALoss && ev.Retransmits > 0:
		// tcp_info's RTO is the next one, already doubled.
		prior := *ev
		if prior.Backoff > 0 {
			prior.RTO /= 2
		}
		t.onRetransmit(c, &prior)
	case ev.Settings.KeepaliveOn && ev.ProbesOut > 0:
		c.probes = int(ev.ProbesOut)
		c.probeSince = ev.Mono - ev.AckAge
		if c.probes >= 2 {
			c.kaAnnounced = true
			t.narrate(c, KeepaliveProbing, false, ev.Mono)
		}
	}
}

// estimateFirstRetransmit is when the outage's first RTO retransmission
// went out. Normally this event is it; when tcpwatch started mid-outage,
// walk back through the halving RTOs the kernel used before.
func estimateFirstRetransmit(ev *wire.Event) time.Duration {
	first := ev.Mono
	rto := ev.RTO
	for i := 1; i < int(ev.Retransmits); i++ {
		rto /= 2
		first -= rto
	}
	return first
}

func (c *conn) endStall() {
	c.stallFirst, c.silenceStart, c.stallRetrans, c.failedSends = 0, 0, 0, 0
	c.rtos = c.rtos[:0]
}

func (t *Tracker) onKeepalive(c *conn, ev *wire.Event) {
	switch {
	case ev.Flags&wire.FlagKeepaliveKill != 0:
		c.kaKilled = true
		c.probes = int(ev.ProbesOut)
		if c.closing {
			t.finalize(c, c.closeMono)
		}
	case ev.Flags&wire.FlagProbeSent != 0:
		if c.probes == 0 {
			c.probeSince = ev.Mono - ev.AckAge
		}
		c.probes = int(ev.ProbesOut)
		if c.probes >= 2 {
			c.kaAnnounced = true
			t.narrate(c, KeepaliveProbing, false, ev.Mono)
		}
	case ev.Flags&wire.FlagProbeAnswered != 0:
		if c.kaAnnounced {
			t.narrate(c, Recovered, false, ev.Mono)
		}
		c.probes, c.kaAnnounced = 0, false
	}
}

// Tick finalizes connections whose CLOSE is older than the grace period:
// by then the reset and error report that follow a close have arrived.
func (t *Tracker) Tick(now time.Duration) {
	if len(t.closing) == 0 {
		return
	}
	kept := t.closing[:0]
	for _, c := range t.closing {
		switch {
		case !c.closing || c.done || c.prev == nil:
			// finalized, or evicted, meanwhile
		case now-c.closeMono >= t.cfg.Grace:
			c.closing = false
			t.finalize(c, c.closeMono)
		default:
			kept = append(kept, c)
		}
	}
	clear(t.closing[len(kept):])
	t.closing = kept
}

// Flush ends tracking: connections that are closing are narrated, and those
// still in an episode are narrated again with Final false.
func (t *Tracker) Flush(now time.Duration) {
	for _, c := range t.closing {
		if c.closing && !c.done && c.prev != nil {
			c.closing = false
			t.finalize(c, c.closeMono)
		}
	}
	t.closing = t.closing[:0]
	for c := t.lru.next; c != &t.lru; c = c.next {
		switch {
		case c.done:
		case c.stallFirst != 0:
			t.narrate(c, Stalled, false, now)
		case c.kaAnnounced:
			t.narrate(c, KeepaliveProbing, false, now)
		}
	}
}

// Stats are the tracker's counters.
type Stats struct {
	Narratives map[string]int
	Evictions  uint64
	Tracked    int
}

// Stats reports narratives by verdict, evictions and connections tracked.
func (t *Tracker) Stats() Stats {
	s := Stats{Narratives: make(map[string]int, len(t.counts)), Evictions: t.evictions, Tracked: len(t.conns)}
	for v, n := range t.counts {
		s.Narratives[string(v)] = n
	}
	return s
}

// finalize decides why a connection that reached CLOSE died.
func (t *Tracker) finalize(c *conn, now time.Duration) {
	t.finish(c, c.finalVerdict(), now)
}

func (t *Tracker) finish(c *conn, v Verdict, now time.Duration) {
	c.done, c.closing = true, false
	if c.listener {
		return
	}
	if v == LocalClosed || v == PeerClosed {
		if !t.cfg.All && !(v == PeerClosed && c.recvReset) {
			return
		}
	}
	t.narrate(c, v, true, now)
}

const (
	errETIMEDOUT    = 110
	errEHOSTUNREACH = 113
	errENETUNREACH  = 101
	errECONNREFUSED = 111
)

// finalVerdict reads the connection's last events in order of what explains
// the death best.
func (c *conn) finalVerdict() Verdict {
	switch {
	case c.exiting:
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
	case c.closeOld == tcp.StateSynSent && c.errno == errECONNREFUSED:
		return ConnectRefused
	case c.closeOld == tcp.StateSynSent && c.errno != 0:
		if c.errno == errEHOSTUNREACH || c.errno == errENETUNREACH {
			return HostUnreachable
		}
		return ConnectTimeout
	case c.errno == errETIMEDOUT:
		if c.probes > 0 && c.stallFirst == 0 {
			return KeepaliveTimeout
		}
		return RetransmitTimeout
	case c.errno == errEHOSTUNREACH || c.errno == errENETUNREACH:
		return HostUnreachable
	case c.sentReset || c.errno != 0:
		return LocalAbort
	case c.sawPeerFIN:
		return PeerClosed
	}
	return LocalClosed
}
