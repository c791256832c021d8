package engine

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// ReconcileEvery is how often, by default, the tracker is compared with the
// kernel's socket tables (Config.ReconcileEvery).
const ReconcileEvery = 10 * time.Second

// reconcileAfterLoss is how soon after a loss report the comparison runs:
// a storm of lost records leaves dead entries behind at once.
const reconcileAfterLoss = time.Second

// catchUp is how far past the end of the table's reading the loop must
// have read before the tracker is known to have every record written
// before it: records of different CPUs reach the ring a little out of
// order, and a socket leaves the table (tcp_set_state() unhashes it)
// just before its CLOSE record is written.
const catchUp = 20 * time.Millisecond

// LiveTable reads the kernel's socket tables of the namespaces given.
type LiveTable func(netns []uint32) (Alive, error)

// Alive answers for one reading of the socket tables (see tracker.Alive).
type Alive interface {
	Has(netns uint32, cookie uint64, local, remote netip.AddrPort) bool
}

// reconciler reads the kernel's socket tables away from the reading loop
// and hands the result to the tracker once the loop has caught up with the
// moment they were read.
type reconciler struct {
	every   time.Duration
	read    LiveTable
	next    time.Time
	running bool
	result  chan liveResult
	ready   *liveResult
	warned  bool
}

type liveResult struct {
	asOf time.Duration // kernel CLOCK_MONOTONIC before the tables were read
	// readEnd is the same clock after they were read. A socket that died
	// while they were read (2,000 connections timing out together, a
	// slow reading on a loaded host) is missing from them, and its CLOSE
	// and error records are dated between asOf and readEnd: the tracker
	// must have them before the table is applied, or their connection is
	// dropped as untold and its end, read next, starts a second story.
	readEnd time.Duration
	alive   Alive
	err     error
}

func newReconciler(opts *Config) *reconciler {
	every := opts.ReconcileEvery
	if every == 0 {
		every = ReconcileEvery
	}
	if every < 0 {
		return nil
	}
	read := opts.LiveTable
	if read == nil {
		read = func(ns []uint32) (Alive, error) { return sockdiag.Live(ns) }
	}
	return &reconciler{every: every, read: read, next: time.Now().Add(every), result: make(chan liveResult, 1)}
}

// soon brings the next comparison forward after a loss.
func (r *reconciler) soon() {
	if r == nil {
		return
	}
	if at := time.Now().Add(reconcileAfterLoss); at.Before(r.next) {
		r.next = at
	}
}

// step starts a reading when one is due, and applies a finished one once
// the loop has read past the end of it: readTo is the kernel time up to
// which every record has been read (the latest record's time, or the time
// the ring was found empty; 0 when unknown), now the loop's latest
// reading of the clock (the schedule is in seconds: one reading per
// record is enough).
func (r *reconciler) step(t *tracker.Tracker, readTo time.Duration, now time.Time, warn func(error)) {
	if r == nil || t == nil {
		return
	}
	select {
	case res := <-r.result:
		r.running = false
		if res.err != nil && warn != nil && !r.warned {
			// Once: a namespace that cannot be read stays so.
			r.warned = true
			warn(fmt.Errorf("comparing with the kernel's socket table: %w", res.err))
		}
		if res.alive != nil {
			r.ready = &res
		}
	default:
	}
	if r.ready != nil && readTo > r.ready.readEnd+catchUp {
		alive := r.ready.alive
		t.Reconcile(r.ready.asOf, wire.MonotonicNow(), alive.Has)
		r.ready = nil
		r.next = now.Add(r.every)
	}
	if !r.running && r.ready == nil && !now.Before(r.next) {
		r.running = true
		r.next = now.Add(r.every)
		ns := t.NetNS()
		go func() {
			asOf := wire.MonotonicNow()
			alive, err := r.read(ns)
			r.result <- liveResult{asOf: asOf, readEnd: wire.MonotonicNow(), alive: alive, err: err}
		}()
	}
}
