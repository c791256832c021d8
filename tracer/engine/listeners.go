package engine

import (
	"time"

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

// listenWatch reads the accept queues away from the reading loop and
// hands each reading to the tracker on the loop's goroutine.
type listenWatch struct {
	every   time.Duration
	read    ReadListeners
	next    time.Time
	running bool
	result  chan listenResult
	warned  bool
}

type listenResult struct {
	mono time.Duration
	ls   []sockdiag.Listener
	err  error
}

func newListenWatch(cfg *Config) *listenWatch {
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
	return &listenWatch{every: every, read: read, next: time.Now().Add(every), result: make(chan listenResult, 1)}
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
		qs := make([]tracker.ListenerQueue, len(r.ls))
		for i, l := range r.ls {
			qs[i] = tracker.ListenerQueue{NetNS: l.NetNS, Local: l.Local, Inode: l.Inode, Queue: l.Queue, Limit: l.Limit, Drops: l.Drops}
		}
		t.ListenerQueues(r.mono, qs)
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
		w.result <- listenResult{mono: mono, ls: ls, err: err}
	}()
}
