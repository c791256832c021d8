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

// ListenerFacts describe a listener's accept queue.
type ListenerFacts struct {
	// QueueLen is the connections waiting for accept() (sk_ack_backlog);
	// QueueLimit the listen() backlog (sk_max_ack_backlog, capped by
	// net.core.somaxconn). The queue is full past QueueLimit.
	QueueLen, QueueLimit uint32
	// TurnedAway counts the SYNs and handshakes the listener dropped
	// since the episode began (sk_drops).
	TurnedAway int
}

// ListenerQueue is one reading of a listener's accept queue (sock_diag).
type ListenerQueue struct {
	NetNS        uint32
	Local        netip.AddrPort
	Inode        uint32
	Queue, Limit uint32
	Drops        uint32 // sk_drops: every SYN or handshake turned away
}

// listenerTellEvery bounds how often an ongoing overflow is told again.
const listenerTellEvery = 10 * time.Second

// listenerQuietPolls ends an episode: readings in a row with no new drop.
const listenerQuietPolls = 3

type overflow struct {
	inode     uint32
	drops     uint32 // sk_drops at the last reading
	lastRead  time.Duration
	active    bool
	since     time.Duration
	turned    int
	lastTold  time.Duration
	quiet     int
	told      bool
	lastQueue ListenerQueue
}

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
// kernel time now: a listener whose drops grew while its queue is full is
// in an accept_queue_overflow episode.
func (t *Tracker) ListenerQueues(now time.Duration, qs []ListenerQueue) {
	if t.overflows == nil {
		t.overflows = map[listenKey]*overflow{}
	}
	seen := make(map[listenKey]bool, len(qs))
	for i := range qs {
		q := &qs[i]
		key := listenKey{q.NetNS, q.Local.Port()}
		seen[key] = true
		o := t.overflows[key]
		if o == nil || o.inode != q.Inode {
			if o == nil && len(t.overflows) >= maxListeners {
				continue
			}
			o = &overflow{inode: q.Inode, drops: q.Drops, lastRead: now, lastQueue: *q}
			t.overflows[key] = o
			if q.Drops > 0 && q.Queue >= q.Limit {
				// Already overflowing when first read: sk_drops counts
				// since the listener was created, when is not known.
				o.active, o.since, o.turned = true, now, int(q.Drops)
				t.tellOverflow(key, o, now)
			}
			continue // else the first reading is the baseline
		}
		delta := int(q.Drops - o.drops)
		prev := o.lastRead
		o.drops, o.lastRead = q.Drops, now
		o.lastQueue = *q
		if delta > 0 && q.Queue >= q.Limit {
			if !o.active {
				// The drops happened since the previous reading.
				*o = overflow{inode: o.inode, drops: o.drops, lastRead: now, active: true, since: prev, lastQueue: *q}
			}
			o.turned += delta
			o.quiet = 0
			if !o.told || now-o.lastTold >= listenerTellEvery {
				t.tellOverflow(key, o, now)
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

func containsNetNS(qs []ListenerQueue, ns uint32) bool {
	for i := range qs {
		if qs[i].NetNS == ns {
			return true
		}
	}
	return false
}

func (t *Tracker) tellOverflow(key listenKey, o *overflow, now time.Duration) {
	q := &o.lastQueue
	n := &Narrative{
		Time:    t.wallAtZero.Add(now),
		Mono:    now,
		Verdict: AcceptQueueOverflow,
		Local:   q.Local,
		Remote:  netip.AddrPortFrom(unspecified(q.Local.Addr()), 0),
		NetNS:   q.NetNS,
		Inode:   q.Inode,
		State:   tcp.StateListen,
		Outage:  now - o.since,
		Begins:  !o.told,
		ListenerFacts: ListenerFacts{QueueLen: q.Queue, QueueLimit: q.Limit,
			TurnedAway: o.turned},
	}
	n.Owner = t.listenerOwner(key, q.Inode)
	o.told, o.lastTold = true, now
	t.counts[AcceptQueueOverflow]++
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
