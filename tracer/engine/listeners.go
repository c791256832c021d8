package engine

import (
	"errors"
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// ListenerEvery is how often, by default, the accept queues of the
// listeners the tracker knows are read (Config.ListenerEvery). A SYN that
// finds a full accept queue is consumed, not dropped (no kfree_skb, no
// tracepoint on any kernel of the matrix): the listener's own counter
// (sk_drops, through sock_diag) is the one place that tells it, so it is
// read. The cost is one sock_diag dump of LISTEN sockets per namespace
// with listeners, per reading: it grows with listeners, not traffic.
const ListenerEvery = time.Second

// ReadListeners reads the listeners of the namespaces given (nil:
// sock_diag), for tests.
type ReadListeners func(spaces []sockdiag.Namespace) ([]sockdiag.Listener, error)

// ReadSynacks reads the kernel half's SYN-ACK retransmission counters
// per listener (tracer.Tracer.SynackRetransmits).
type ReadSynacks func() ([]tracer.SynackListener, error)

// listenWatch reads the accept queues away from the reading loop and
// hands each reading to the tracker on the loop's goroutine.
type listenWatch struct {
	every   time.Duration
	read    ReadListeners
	synacks ReadSynacks
	next    time.Time
	running bool
	result  chan listenResult
	warned  bool
}

type listenResult struct {
	mono time.Duration
	ls   []sockdiag.Listener
	syn  []tracer.SynackListener
	err  error
}

func newListenWatch(cfg *Config, src Source) *listenWatch {
	every := cfg.ListenerEvery
	if every == 0 {
		every = ListenerEvery
	}
	if every < 0 {
		return nil
	}
	read := cfg.ReadListeners
	if read == nil {
		w := sockdiag.NewListenerWatch()
		read = w.Read
	}
	synacks := cfg.ReadSynacks
	if s, ok := src.(interface {
		SynackRetransmits() ([]tracer.SynackListener, error)
	}); ok && synacks == nil {
		synacks = s.SynackRetransmits
	}
	return &listenWatch{every: every, read: read, synacks: synacks, next: time.Now().Add(every), result: make(chan listenResult, 1)}
}

// step hands a finished reading to the tracker and starts the next one
// when it is due.
func (w *listenWatch) step(t *tracker.Tracker, now time.Time, warn func(error)) {
	if w == nil {
		return
	}
	select {
	case r := <-w.result:
		w.running = false
		if r.err != nil && warn != nil && !w.warned {
			w.warned = true
			warn(r.err)
		}
		t.ListenerQueues(r.mono, listenerQueues(r.ls, r.syn))
	default:
	}
	if w.running || now.Before(w.next) {
		return
	}
	w.next = now.Add(w.every)
	var ns []sockdiag.Namespace
	for _, l := range t.ListenerNetNS() {
		ns = append(ns, sockdiag.Namespace{Inode: l.NetNS, PID: l.PID})
	}
	if len(ns) == 0 {
		return
	}
	w.running = true
	go func() {
		mono := wire.MonotonicNow()
		ls, err := w.read(ns)
		var syn []tracer.SynackListener
		if w.synacks != nil {
			var serr error
			syn, serr = w.synacks()
			err = errors.Join(err, serr)
		}
		w.result <- listenResult{mono: mono, ls: ls, syn: syn, err: err}
	}()
}

// listenerQueues joins the listeners' accept queues (sock_diag) with the
// kernel half's SYN-ACK counters, by namespace, port and family.
func listenerQueues(ls []sockdiag.Listener, syn []tracer.SynackListener) []tracker.ListenerQueue {
	type key struct {
		netns uint32
		port  uint16
		v6    bool
	}
	bySock := make(map[key]*tracer.SynackListener, len(syn))
	for i := range syn {
		s := &syn[i]
		bySock[key{s.NetNS, s.Port, s.Family == afInet6}] = s
	}
	qs := make([]tracker.ListenerQueue, len(ls))
	for i, l := range ls {
		q := tracker.ListenerQueue{NetNS: l.NetNS, Local: l.Local, Inode: l.Inode, Queue: l.Queue, Limit: l.Limit, Drops: l.Drops, CgroupID: l.CgroupID,
			Space: tracker.NetnsSynCounts{CookiesSent: l.Space.SyncookiesSent, ReqQFullDrop: l.Space.ReqQFullDrop,
				ListenOverflows: l.Space.ListenOverflows, Syncookies: l.Space.Syncookies, Read: l.Space.Read}}
		if s := bySock[key{l.NetNS, l.Local.Port(), isV6(l.Local.Addr())}]; s != nil {
			q.Synack = tracker.SynackCounts{Retransmits: s.Retransmits, Clients: s.Clients, Acked: s.AckedClients,
				SynQueue: s.SynQueue}
		}
		qs[i] = q
	}
	return qs
}

// afInet6 is AF_INET6, as the kernel half keys a listener's family.
const afInet6 = 10

// isV6 says whether a listener's socket is an IPv6 one (a dual-stack [::]
// listener included).
func isV6(a netip.Addr) bool { return a.Is6() }
