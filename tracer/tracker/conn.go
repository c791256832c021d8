package tracker

import (
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

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
	unjoined      uint32 // the tracker's unjoined when it was made (drops.go, DropsUnjoined)
	cgroupID      uint64 // the socket's cgroup v2 id, from its records
	local, remote netip.AddrPort
	netns         uint32
	owner         Owner
	destroyed     bool // its destroy record came: no process holds it
	firstMono     time.Duration
	last          figures // from the latest event
	steps         []step
	// stepsHere holds the first steps: a normal lifecycle has 4 to 6,
	// and growing the slice from nothing took four allocations an end.
	stepsHere    [8]step
	droppedSteps int
	lossEpoch    uint64

	// queued counts its entries in the closing queue; pinned: a fold of
	// connect() failures or the window probes holds it; free: it waits
	// for reuse (reuse.go).
	queued       int32
	pinned, free bool
	// scratch: the entry of a whole lifecycle (whole.go), held by nothing.
	scratch bool

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

	// giveUpAt: when the kernel gives up on the episode last told (0:
	// never, or none told); overdue: the episode went silent past it,
	// and the socket table is to say whether it lives (deadline.go).
	// endUnseen: its end is the kernel's at that deadline, its records
	// of it never seen.
	giveUpAt           time.Duration
	overdue, endUnseen bool

	// The current outage: RTO retransmissions with no ACK.
	stallFirst   time.Duration // first retransmission of the outage (kernel's retrans_stamp)
	silenceStart time.Duration // when the peer went silent
	stallRetrans int
	rtos         []time.Duration
	// The retransmission timer's latest expiry, the RTO that expired then
	// (the kernel doubles it for the next one) and icsk_retransmits after
	// it: the ground of the projected give-up.
	timerAt          time.Duration
	timerRTO         time.Duration
	timerRetransmits uint8
	// timerSendFailed: the latest expiry's retransmission never left this
	// host; restartAt and restartRTO: when that held segment went out
	// after all (between two expiries) and the RTO the kernel restarted
	// the timer with then (outage.go, heldSendLeft). restartAt is 0 when
	// the timer runs as its latest expiry armed it.
	timerSendFailed       bool
	restartAt, restartRTO time.Duration
	// retransStamp is the kernel's retrans_stamp, from which it counts the
	// budget: the first retransmission's time, or the original
	// transmission's when that retransmission never left this host (the
	// kernel stamps the attempt with the segment's last send).
	retransStamp time.Duration
	failedSends  int   // retransmissions that never left this host
	failedErrno  int32 // ... and the error of the last one
	synRetrans   int
	synSent      bool // connect()ed: seen in SYN_SENT
	// connectAt: when connect() sent the first SYN (the kernel's time the
	// socket was first seen, else the SYN_SENT record's), from which the
	// kernel counts tcp_syn_retries' budget.
	connectAt time.Duration
	drops     connDrops   // this host's drops of its packets, during the episode (drops.go)
	window    windowProbe // the zero-window probe timer's episode (probe.go)

	// Keepalive.
	probes      int
	probeSince  time.Duration
	probeAt     time.Duration // the latest probe sent
	answeredAt  time.Duration // when the peer answered the probing (recovered)
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
	resent      bool // a retransmission held on this host, sent after the timer (heldSendLeft)
}

func tupleOf(ev *wire.Event) (tupleKey, bool) {
	if ev.Local.Port() == 0 || ev.Remote.Port() == 0 {
		return tupleKey{}, false
	}
	return tupleKey{ev.NetNS, ev.Local, ev.Remote}, true
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
	if ev.Cookie != 0 && t.gone.Has(ev.Cookie) {
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
	c := t.newConn()
	t.begin(c, ev, tk)
	c.prev, c.next = &t.lru, t.lru.next
	t.lru.next.prev = c
	t.lru.next = c
	if c.cookie != 0 {
		t.byCookie[c.cookie] = c
	}
	if hasTuple {
		t.byTuple[tk] = c // a newer socket on the same 4-tuple takes it over
	}
	t.tracked++
	t.peak = max(t.peak, t.tracked)
	return c
}

// begin fills a new entry from its first record.
func (t *Tracker) begin(c *conn, ev *wire.Event, tk tupleKey) {
	c.cookie, c.netns, c.firstMono, c.state, c.lossEpoch = ev.Cookie, ev.NetNS, ev.Mono, ev.State, t.lossEpoch
	c.unjoined = t.unjoined
	c.steps = c.stepsHere[:0]
	if ev.FirstSeen != 0 && ev.FirstSeen < ev.Mono {
		c.firstMono = ev.FirstSeen
	}
	c.tuple = tk
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
	t.removedConn(c)
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

// observe records what every event tells about the connection.
func (c *conn) observe(ev *wire.Event, names *wire.Names) {
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
	// The kernel's owner replaces a guess, and its latest thread the
	// thread of an earlier record (an accepted socket named from /proc,
	// then closed by an exiting thread of that process).
	if ev.PID != 0 && (ev.PID != c.owner.PID || c.owner.Source == wire.OwnerListener || ev.Thread() != c.owner.Thread) {
		c.owner = Owner{PID: ev.PID, Comm: names.Comm(ev), Thread: ev.Thread(), Source: ownerSource(ev.Owner)}
	}
	// Orphan is a fact of the connection while it lived: an application
	// that closes its socket after the kernel ended the connection (psql
	// after ETIMEDOUT) leaves an orphan for the destroy to report, but the
	// kernel decided about a socket the application held.
	if ev.Flags&wire.FlagOrphan != 0 && !c.closing {
		c.orphan = true
	}
	if ev.Kind == wire.KindDestroy {
		c.destroyed = true
	}
	if ev.Flags&wire.FlagOwnerExiting != 0 {
		c.exiting, c.exitCode = true, ev.ExitCode
	}
	if ev.State == tcp.StateSynSent || ev.Kind == wire.KindState && ev.OldState == tcp.StateSynSent {
		if !c.synSent {
			c.connectAt = ev.FirstSeen
			if c.connectAt == 0 || ev.Kind == wire.KindState && ev.State == tcp.StateSynSent {
				c.connectAt = ev.Mono
			}
		}
		c.synSent = true
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
