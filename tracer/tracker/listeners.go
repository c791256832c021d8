package tracker

import (
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// AcceptQueueOverflow is the episode of a listener whose accept queue is
// full: its application stopped calling accept() (or calls it too slowly),
// and the kernel turns new clients away (a SYN or handshake-completing ACK
// that finds sk_acceptq_is_full is dropped and counted in sk_drops,
// LINUX_MIB_LISTENOVERFLOWS/LISTENDROPS). Clients see connect() retry its
// SYN and time out. One narrative per listener and episode, repeated at
// most every listenerTellEvery while it lasts.
const AcceptQueueOverflow Verdict = "accept_queue_overflow"

// SynackUnanswered is the episode of a listener whose clients do not
// finish their handshake: the kernel retransmits its SYN-ACKs
// (tcp:tcp_retransmit_synack) to request sockets whose client never sent
// the final ACK, while the accept queue has room. Clients that vanish
// after their SYN (a SYN flood from spoofed addresses), or SYN-ACKs or
// ACKs lost between here and the clients. Told like
// AcceptQueueOverflow: once per listener and episode; an episode in
// which the accept queue also overflows is told as AcceptQueueOverflow.
const SynackUnanswered Verdict = "synack_unanswered"

// ListenerCause is what a listener's episode points at: which team to call.
type ListenerCause string

const (
	// NotAccepting: the accept queue was full at every reading while the
	// kernel turned clients away: the application does not call
	// accept(), or far too slowly.
	NotAccepting ListenerCause = "not_accepting"
	// BacklogTooSmall: clients were turned away, yet some reading found
	// the queue below its limit: the application accepts, but the
	// backlog does not hold its bursts.
	BacklogTooSmall ListenerCause = "backlog_too_small"
	// SynFlood: clients never answered the SYN-ACKs and the SYN queue was
	// full (SYN cookies sent in the namespace, or its request sockets
	// reached the listener's limit).
	SynFlood ListenerCause = "syn_flood"
	// HandshakesUnanswered: clients never answered the SYN-ACKs, the SYN
	// queue had room: they vanished after their SYN, or the SYN-ACKs or
	// their ACKs are lost on the way.
	HandshakesUnanswered ListenerCause = "handshakes_unanswered"
)

// ListenerFacts describe a listener's accept queue, its SYN queue and
// SYN-ACK retransmissions, and the SYN cookies of its namespace.
type ListenerFacts struct {
	// QueueLen is the connections waiting for accept() (sk_ack_backlog);
	// QueueLimit the listen() backlog (sk_max_ack_backlog, capped by
	// net.core.somaxconn). The queue is full past QueueLimit.
	QueueLen, QueueLimit uint32
	// TurnedAway counts the SYNs and handshakes the listener dropped
	// since the episode began (sk_drops).
	TurnedAway int
	// SynackRetransmits counts the SYN-ACKs sent again since the episode
	// began, SynackClients the clients (request sockets) they went to
	// that never answered, SynackAcked those that answered into a full
	// accept queue. SynQueueLen is the request sockets at the last
	// retransmission, SynQueueMax the most seen at a reading of the
	// episode.
	SynackRetransmits, SynackClients, SynackAcked int
	SynQueueLen, SynQueueMax                      uint32
	// CookiesSent counts the SYN cookies its namespace sent since the
	// episode began (the kernel counts them per namespace only),
	// SynQueueFullDrops the SYNs its namespace dropped for a full SYN
	// queue with cookies off; Syncookies is the namespace's
	// tcp_syncookies, -1 unknown; CookiesKnown says the counters were read.
	CookiesSent, SynQueueFullDrops int
	Syncookies                     int
	CookiesKnown                   bool
	// Cause is what the episode points at.
	Cause ListenerCause
}

// ListenerQueue is one reading of a listener's accept queue (sock_diag),
// with its SYN-ACK retransmissions (the kernel half's counters) and its
// namespace's SYN counters.
type ListenerQueue struct {
	NetNS        uint32
	Local        netip.AddrPort
	Inode        uint32
	Queue, Limit uint32
	Drops        uint32 // sk_drops: every SYN or handshake turned away
	CgroupID     uint64 // the socket's cgroup v2 id: what names its container
	Synack       SynackCounts
	Space        NetnsSynCounts
}

// SynackCounts are a listener's SYN-ACK retransmission counters, as the
// kernel half keeps them: they only grow.
type SynackCounts struct {
	Retransmits, Clients, Acked uint64
	SynQueue                    uint32 // request sockets at the last retransmission
}

// NetnsSynCounts are a namespace's SYN counters (TcpExt), they only grow;
// Read false when they could not be read.
type NetnsSynCounts struct {
	CookiesSent, ReqQFullDrop, ListenOverflows uint64
	Syncookies                                 int
	Read                                       bool
}

// listenerTellEvery bounds how often an ongoing episode is told again,
// unless what it points at changed (its cause).
const listenerTellEvery = 10 * time.Second

// listenerQuietPolls ends an episode: readings in a row with no new drop
// and no new retransmission.
const listenerQuietPolls = 3

type overflow struct {
	inode    uint32
	drops    uint32 // sk_drops at the last reading
	synack   SynackCounts
	space    NetnsSynCounts
	lastRead time.Duration
	active   bool
	since    time.Duration
	turned   int
	// The episode's sums since it began, and the most request sockets
	// (SYN queue) seen at a retransmission in it.
	retrans, clients, acked, cookies, qfull int
	synPeak                                 uint32
	// fullReads and roomReads count the readings of the episode that
	// turned clients away with the queue full, and with room.
	fullReads, roomReads int
	lastTold             time.Duration
	toldCause            ListenerCause // the cause last told: a new one is news at once
	quiet                int
	told                 bool
	lastQueue            ListenerQueue
	pending              pendingClients // unanswered clients not yet an episode
}

// pendingClients are unanswered clients seen while no episode is open.
type pendingClients struct {
	since                            time.Duration
	clients, retrans, cookies, qfull int
	quiet                            int
}

// synackMinClients is how many clients must leave SYN-ACKs unanswered,
// within readings no more than listenerQuietPolls apart, before a
// listener is in a synack_unanswered episode (a full SYN queue begins
// one at once).
const synackMinClients = 3

// ListenerNS is a namespace where the tracker knows listeners, with the
// pid of one listener's owner (a way into the namespace).
type ListenerNS struct {
	NetNS, PID uint32
}

// ListenerNetNS lists the namespaces where the tracker knows listeners:
// the ones whose accept queues are worth reading.
func (t *Tracker) ListenerNetNS() []ListenerNS {
	seen := map[uint32]bool{}
	var out []ListenerNS
	for k, o := range t.listeners {
		if !seen[k.netns] {
			seen[k.netns] = true
			out = append(out, ListenerNS{NetNS: k.netns, PID: o.PID})
		}
	}
	return out
}

// ListenerQueues takes a reading of the listeners' accept queues, made at
// kernel time now: a listener whose drops grew while its queue was full
// (at the reading, or as its namespace's ListenOverflows says) is in an
// accept_queue_overflow episode; one whose SYN-ACKs went unanswered by
// new clients, in a synack_unanswered episode.
func (t *Tracker) ListenerQueues(now time.Duration, qs []ListenerQueue) {
	if t.overflows == nil {
		t.overflows = map[queueKey]*overflow{}
	}
	seen := make(map[queueKey]bool, len(qs))
	for i := range qs {
		q := &qs[i]
		key := queueKey{q.NetNS, q.Local}
		seen[key] = true
		o := t.overflows[key]
		if o == nil || o.inode != q.Inode {
			if o == nil && len(t.overflows) >= maxListeners {
				continue
			}
			o = &overflow{inode: q.Inode, drops: q.Drops, synack: q.Synack, space: q.Space, lastRead: now, lastQueue: *q}
			t.overflows[key] = o
			if q.Drops > 0 && q.Queue >= q.Limit {
				// Already overflowing when first read: sk_drops counts
				// since the listener was created, when is not known.
				o.active, o.since, o.turned, o.fullReads = true, now, int(q.Drops), 1
				t.tellListener(key, o, now)
			}
			continue // else the first reading is the baseline
		}
		delta := int(q.Drops - o.drops)
		overflowed := q.Space.Read && o.space.Read && q.Space.ListenOverflows > o.space.ListenOverflows
		full := q.Queue >= q.Limit
		turned := delta > 0 && (full || overflowed)
		retrans := grewBy(q.Synack.Retransmits, o.synack.Retransmits)
		clients := grewBy(q.Synack.Clients, o.synack.Clients)
		acked := grewBy(q.Synack.Acked, o.synack.Acked)
		var cookies, qfull int
		if q.Space.Read && o.space.Read {
			cookies = int(q.Space.CookiesSent - o.space.CookiesSent)
			qfull = int(q.Space.ReqQFullDrop - o.space.ReqQFullDrop)
		}
		prev := o.lastRead
		o.drops, o.synack, o.space, o.lastRead = q.Drops, q.Synack, q.Space, now
		o.lastQueue = *q
		if !o.active && !turned {
			// Unanswered clients begin an episode only when there are
			// enough of them, or the SYN queue overflows: one lost
			// SYN-ACK, or a scanner that never answers, is not one.
			p := &o.pending
			if clients == 0 {
				if p.clients > 0 {
					if p.quiet++; p.quiet >= listenerQuietPolls {
						*p = pendingClients{}
					}
				}
				continue
			}
			if p.clients == 0 {
				p.since = prev
			}
			p.clients += clients
			p.retrans += retrans
			p.cookies += cookies
			p.qfull += qfull
			p.quiet = 0
			if p.clients < synackMinClients && p.cookies == 0 && p.qfull == 0 {
				continue
			}
			// Begin with what was pending, this reading included.
			clients, retrans, cookies, qfull, prev = p.clients, p.retrans, p.cookies, p.qfull, p.since
		} else if p := &o.pending; !o.active && p.clients > 0 {
			// Turned away now, with unanswered clients pending: one episode.
			clients, retrans, cookies, qfull = clients+p.clients, retrans+p.retrans, cookies+p.cookies, qfull+p.qfull
		}
		if turned || clients > 0 || (o.active && retrans > 0) {
			if !o.active {
				// It began since the previous reading.
				*o = overflow{inode: o.inode, drops: o.drops, synack: o.synack, space: o.space, lastRead: now,
					active: true, since: prev, lastQueue: *q}
			}
			if turned {
				o.turned += delta
				if full {
					o.fullReads++
				} else {
					o.roomReads++
				}
			}
			o.retrans += retrans
			o.clients += clients
			o.acked += acked
			if retrans > 0 {
				o.synPeak = max(o.synPeak, q.Synack.SynQueue)
			}
			o.cookies += cookies
			o.qfull += qfull
			o.quiet = 0
			if !o.told || now-o.lastTold >= listenerTellEvery || o.cause() != o.toldCause {
				t.tellListener(key, o, now)
			}
			continue
		}
		if o.active {
			if o.quiet++; o.quiet >= listenerQuietPolls {
				o.active = false
			}
		}
	}
	for k := range t.overflows {
		if !seen[k] && containsNetNS(qs, k.netns) {
			delete(t.overflows, k) // the listener closed
		}
	}
}

// queueKey is one listening socket: a port may have two (0.0.0.0 and
// [::] with IPV6_V6ONLY, nginx's "listen 80; listen [::]:80"), each with
// its own queue.
type queueKey struct {
	netns uint32
	local netip.AddrPort
}

func containsNetNS(qs []ListenerQueue, ns uint32) bool {
	for i := range qs {
		if qs[i].NetNS == ns {
			return true
		}
	}
	return false
}

// cause says which team a listener's episode points at.
func (o *overflow) cause() ListenerCause {
	switch {
	case o.turned > 0 && o.roomReads > 0:
		return BacklogTooSmall
	case o.turned > 0:
		return NotAccepting
	case o.cookies > 0 || o.qfull > 0 || (o.lastQueue.Limit > 0 && o.synPeak >= o.lastQueue.Limit):
		return SynFlood
	}
	return HandshakesUnanswered
}

func (t *Tracker) tellListener(key queueKey, o *overflow, now time.Duration) {
	q := &o.lastQueue
	verdict := SynackUnanswered
	if o.turned > 0 {
		verdict = AcceptQueueOverflow
	}
	n := &Narrative{
		Time:     t.wallAtZero.Add(now),
		Mono:     now,
		Verdict:  verdict,
		Local:    q.Local,
		Remote:   netip.AddrPortFrom(unspecified(q.Local.Addr()), 0),
		NetNS:    q.NetNS,
		Inode:    q.Inode,
		CgroupID: q.CgroupID,
		State:    tcp.StateListen,
		Outage:   now - o.since,
		Begins:   !o.told,
		ListenerFacts: ListenerFacts{QueueLen: q.Queue, QueueLimit: q.Limit, TurnedAway: o.turned,
			SynackRetransmits: o.retrans, SynackClients: o.clients, SynackAcked: o.acked,
			SynQueueLen: q.Synack.SynQueue, SynQueueMax: o.synPeak,
			CookiesSent: o.cookies, SynQueueFullDrops: o.qfull, Syncookies: q.Space.Syncookies,
			CookiesKnown: q.Space.Read, Cause: o.cause()},
	}
	if !q.Space.Read {
		n.Syncookies = -1
	}
	n.Owner = t.listenerOwner(listenKey{key.netns, key.local.Port()}, q.Inode)
	o.told, o.lastTold, o.toldCause = true, now, n.Cause
	t.counts[verdict]++
	t.pending.Push(now, n)
}

// listenerOwner is the process holding the listener's descriptor, else
// the one that called listen().
func (t *Tracker) listenerOwner(key listenKey, inode uint32) Owner {
	if t.cfg.Owners != nil && inode != 0 {
		if pid, comm, ok := t.cfg.Owners.Owner(inode); ok {
			return Owner{PID: pid, Comm: comm, Source: wire.OwnerProcfs}
		}
	}
	return t.listeners[key]
}

func unspecified(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// grewBy is how much a kernel counter grew between two readings. The
// SYN-ACK counters start again from 0 when the kernel forgets a port's
// entry (its listener, or one of those sharing the port, closed): what
// they hold then is what came since, not a wrap of a few billion.
func grewBy(now, before uint64) int {
	if now < before {
		return int(now)
	}
	return int(now - before)
}
