package tracker

import (
	"math"
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Narratives waiting out the grace period (Config.Grace), held compact.
// With --all every normal end of every connection is a narrative, and
// every narrative waits 50 ms before it is told: at a busy host's churn
// thousands wait at once. A Narrative with its timeline is about 1.2 KiB
// (20 cache lines) of which a normal end fills a few hundred bytes; held
// as they are, the waiting ones are megabytes that leave the cache
// before they are told, and writing one and reading it back 50 ms later
// were the costliest lines of --all's user space after the work itself.
//
// A normal end (local_closed, peer_closed) is therefore narrated into one
// narrative that stays in the cache (Tracker.building), by the same code
// as any other, and held as a heldEnd: the facts it has, in 520 bytes
// (about 8 cache lines), inline in the queue's ring (heldQueue), written
// and read in the
// order of time, which the memory's prefetching follows. At its time it
// is unpacked into one other narrative (Tracker.unpacked) that is told
// and reused at once. Anything a heldEnd cannot carry exactly (a peer's
// end, a reset's reason, a long timeline, figures of an outage) keeps the
// narrative as it is, held by pointer as before. TestHeldEndCarriesEverything
// checks every field of Narrative either survives or is refused;
// TestHeldEndsTellTheSame and TestHeldEndsWriteTheSame compare the
// narratives and the lines written with ends held whole.

// maxHeldSteps bounds a held end's timeline: a lifecycle record's steps
// (wire.LifeSteps) and its destroy.
const maxHeldSteps = wire.LifeSteps + 1

// heldEnd is a normal end's narrative as it waits out the grace period:
// Narrative's fields that a normal end fills, flattened and narrowed
// (small enums in a byte, booleans in bits), and its connection's steps
// as the entry keeps them (a plain copy: its Timeline is made from them
// when it is told, by the same code, in memory that is in the cache).
// Its Mono is the queue's time.
type heldEnd struct {
	time                         time.Time
	cookie, cgroupID             uint64
	local, remote                netip.AddrPort
	comm, thread                 string
	rtoMax, budgetLimit          time.Duration
	kaTime, kaIntvl, userTimeout time.Duration
	firstMono                    time.Duration
	pid, netns, inode            uint32
	errno, skErrSoft             int32
	budgetValue, dropped         int32
	verdict, budgetSetting       uint8
	source                       wire.OwnerSource
	state, resetState            tcp.State
	caState                      tcp.CAState
	retries2, synRetries         uint8
	synLinear, orphanRetries     uint8
	kaProbes                     uint8
	bits                         heldBits
	steps                        uint8
	step                         [maxHeldSteps]step
}

type heldBits uint16

const (
	heldFinal heldBits = 1 << iota
	heldOrphan
	heldConnecting
	heldSentReset
	heldLostRecords
	heldEndUnseen
	heldDropsSeen
	heldUnjoined
	heldKeepaliveOn
)

// budgetSettings are the settings a Budget names (budgetOf).
var budgetSettings = [...]string{"", "tcp_retries2", "TCP_USER_TIMEOUT", "tcp_orphan_retries", "tcp_syn_retries"}

// heldVerdict is where v is in Verdicts.
func heldVerdict(v Verdict) (uint8, bool) {
	for i := range Verdicts {
		if Verdicts[i] == v {
			return uint8(i), true
		}
	}
	return 0, false
}

// heldSetting is where s is in budgetSettings.
func heldSetting(s string) (uint8, bool) {
	for i := range budgetSettings {
		if budgetSettings[i] == s {
			return uint8(i), true
		}
	}
	return 0, false
}

func bit(b bool, f heldBits) heldBits {
	if b {
		return f
	}
	return 0
}

func fitsInt32[T ~int | ~int64](v T) bool { return v >= math.MinInt32 && v <= math.MaxInt32 }

// pack makes h the held form of n, a narrative of c made without its
// Timeline; it says whether n is one a held end carries: every field it
// cannot carry is zero, and those it narrows fit.
func (h *heldEnd) pack(n *Narrative, c *conn) bool {
	// What a normal end never has (outages, episodes, listeners, ports,
	// drops, the other end) keeps the narrative whole.
	if !n.Final || n.Incident != "" || n.ResetReason != "" || n.Retransmits != 0 || n.FailedSends != 0 || n.FailedErrno != 0 ||
		n.Probes != 0 || n.Outage != 0 || n.GiveUpIn != 0 || n.RTOs != nil || n.BackoffReverted || n.TimerRestarted ||
		n.ExitSignal != 0 || n.ExitStatus != 0 || n.Begins || n.CloseWaitSockets != 0 || n.CloseWaitFor != 0 ||
		n.CloseWaitExited || n.Ports != (PortUse{}) || n.Drops != nil || n.LeftHost != 0 || n.WindowFacts != (WindowFacts{}) ||
		n.ListenerFacts != (ListenerFacts{}) || n.PeerEnd != nil || n.Timeline != nil {
		return false
	}
	if !fitsInt32(n.Budget.Value) || len(c.steps) == 0 || len(c.steps) > maxHeldSteps || !fitsInt32(c.droppedSteps) {
		return false
	}
	verdict, ok := heldVerdict(n.Verdict)
	setting, ok2 := heldSetting(n.Budget.Setting)
	if !ok || !ok2 {
		return false
	}
	st := &n.Settings
	h.time, h.cookie, h.cgroupID, h.local, h.remote = n.Time, n.Cookie, n.CgroupID, n.Local, n.Remote
	h.comm, h.thread, h.pid, h.source = n.Owner.Comm, n.Owner.Thread, n.Owner.PID, n.Owner.Source
	h.rtoMax, h.budgetLimit, h.budgetValue, h.budgetSetting = n.RTOMax, n.Budget.Limit, int32(n.Budget.Value), setting
	h.kaTime, h.kaIntvl, h.userTimeout, h.kaProbes = st.KeepaliveTime, st.KeepaliveIntvl, st.UserTimeout, st.KeepaliveProbes
	h.retries2, h.synRetries, h.synLinear, h.orphanRetries = st.Retries2, st.SynRetries, st.SynLinearTimeouts, st.OrphanRetries
	h.netns, h.inode, h.errno, h.skErrSoft = n.NetNS, n.Inode, n.Errno, n.SkErrSoft
	h.verdict, h.state, h.resetState, h.caState = verdict, n.State, n.ResetState, n.CAState
	h.bits = bit(n.Final, heldFinal) | bit(n.Orphan, heldOrphan) | bit(n.Connecting, heldConnecting) |
		bit(n.SentReset, heldSentReset) | bit(n.LostRecords, heldLostRecords) | bit(n.EndUnseen, heldEndUnseen) |
		bit(n.DropsSeen, heldDropsSeen) | bit(n.Unjoined, heldUnjoined) | bit(st.KeepaliveOn, heldKeepaliveOn)
	h.firstMono, h.dropped, h.steps = c.firstMono, int32(c.droppedSteps), uint8(copy(h.step[:], c.steps))
	return true
}

// unpack fills n with the narrative h holds, dated mono, its timeline in
// n's array when it has room.
func (t *Tracker) unpack(n *Narrative, h *heldEnd, mono time.Duration) {
	tl := t.timelineOf(n.Timeline, h.step[:h.steps], h.firstMono, int(h.dropped))
	b := h.bits
	*n = Narrative{
		Time:        h.time,
		Mono:        mono,
		Verdict:     Verdicts[h.verdict],
		Final:       b&heldFinal != 0,
		Cookie:      h.cookie,
		Local:       h.local,
		Remote:      h.remote,
		NetNS:       h.netns,
		Inode:       h.inode,
		Owner:       Owner{PID: h.pid, Comm: h.comm, Thread: h.thread, Source: h.source},
		CgroupID:    h.cgroupID,
		State:       h.state,
		Orphan:      b&heldOrphan != 0,
		Connecting:  b&heldConnecting != 0,
		Errno:       h.errno,
		ResetState:  h.resetState,
		SkErrSoft:   h.skErrSoft,
		Budget:      Budget{Limit: h.budgetLimit, Setting: budgetSettings[h.budgetSetting], Value: int(h.budgetValue)},
		CAState:     h.caState,
		SentReset:   b&heldSentReset != 0,
		LostRecords: b&heldLostRecords != 0,
		EndUnseen:   b&heldEndUnseen != 0,
		Timeline:    tl,
		Settings: tcp.Settings{Retries2: h.retries2, SynRetries: h.synRetries, SynLinearTimeouts: h.synLinear,
			OrphanRetries: h.orphanRetries, KeepaliveOn: b&heldKeepaliveOn != 0, KeepaliveTime: h.kaTime,
			KeepaliveIntvl: h.kaIntvl, KeepaliveProbes: h.kaProbes, UserTimeout: h.userTimeout},
		RTOMax:    h.rtoMax,
		DropFacts: DropFacts{DropsSeen: b&heldDropsSeen != 0, Unjoined: b&heldUnjoined != 0},
	}
}

// held is one narrative waiting out the grace period: whole (full), or a
// normal end held compact (end, when full is nil).
type held struct {
	at   time.Duration
	full *Narrative
	end  heldEnd
}

// heldQueue is the narratives waiting out the grace period, in the order
// of their time and among equal times in the order they were pushed (as
// timeQueue), in a ring: pushed almost always in time order and taken
// from the front, each item is written and read once where it lies.
type heldQueue struct {
	ring []held // len a power of two
	head int
	n    int
}

func (q *heldQueue) Len() int { return q.n }

func (q *heldQueue) at(i int) *held { return &q.ring[(q.head+i)&(len(q.ring)-1)] }

// minHeld is the smallest ring: room for what waits at a quiet host
// (34 KiB; without --all few narratives wait).
const minHeld = 64

// resize makes the ring size long, the items in order from its start.
func (q *heldQueue) resize(size int) {
	ring := make([]held, size)
	for i := range q.n {
		ring[i] = *q.at(i)
	}
	q.ring, q.head = ring, 0
}

// shrink lets go of the room a storm took that what waits now does not
// need (nothing, when nothing waits).
func (q *heldQueue) shrink() {
	if q.n == 0 {
		q.ring, q.head = nil, 0
		return
	}
	size := minHeld
	for size < 2*q.n {
		size *= 2
	}
	if size < len(q.ring) {
		q.resize(size)
	}
}

// slot makes room for an item at time at, after every item whose time is
// at or before it, and returns it for the caller to fill.
func (q *heldQueue) slot(at time.Duration) *held {
	if q.n == len(q.ring) {
		q.resize(max(2*len(q.ring), minHeld))
	}
	pos := q.n
	if q.n > 0 && q.at(q.n-1).at > at {
		// Out of order (records of two CPUs, a verdict dated at an earlier
		// close): the first item later than at, by binary search.
		lo, hi := 0, q.n-1
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if q.at(m).at <= at {
				lo = m + 1
			} else {
				hi = m
			}
		}
		pos = lo
		for i := q.n; i > pos; i-- {
			*q.at(i) = *q.at(i - 1)
		}
	}
	q.n++
	h := q.at(pos)
	h.at, h.full = at, nil
	return h
}

// Push holds a whole narrative.
func (q *heldQueue) Push(at time.Duration, n *Narrative) { q.slot(at).full = n }

// Front returns the earliest item, nil when there is none.
func (q *heldQueue) Front() *held {
	if q.n == 0 {
		return nil
	}
	return q.at(0)
}

// Pop removes the earliest item.
func (q *heldQueue) Pop() {
	h := q.at(0)
	h.full = nil // let a whole narrative be collected
	h.end.comm, h.end.thread = "", ""
	q.head = (q.head + 1) & (len(q.ring) - 1)
	q.n--
}

// DropIf removes the whole narratives drop says to, keeping the others in
// order. Held ends are finals of connections that ended normally; drop is
// not asked about them (refuseAfterEnd drops no final).
func (q *heldQueue) DropIf(drop func(at time.Duration, n *Narrative) bool) (dropped int) {
	kept := 0
	for i := range q.n {
		h := q.at(i)
		if h.full != nil && drop(h.at, h.full) {
			dropped++
			continue
		}
		if kept != i {
			*q.at(kept) = *h
		}
		kept++
	}
	for i := kept; i < q.n; i++ {
		*q.at(i) = held{}
	}
	q.n = kept
	return dropped
}
