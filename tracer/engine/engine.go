// Package engine is tcpwatch's one path from the kernel to a reader. A
// record goes through its stages in the order of its files:
//
//	source.go   read   records from the kernel half, decoded (tracer.Tracer, or a fake in tests)
//	track.go    track  the tracker turns records into narratives and notices
//	enrich.go   enrich what the engine adds to each item: its cgroup, container and pod
//	filter.go   filter keep what the person asked about, decided once per item
//	tell.go     tell   hand items to a Sink; stages (metrics, incidents) are Sinks wrapping Sinks
//
// Around them: existing.go (connections older than tcpwatch, from
// sock_diag), reconcile.go (the tracker against the kernel's socket
// tables) and memory.go (memory back to the system after a burst). The
// watch command, the lab and the tests all compose tracer.New and New the
// same way and run this one loop.
package engine

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/owners"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Mode says what the engine tells.
type Mode int

const (
	// ModeDefault tells narratives of failures and outages.
	ModeDefault Mode = iota
	// ModeAll (--all) also narrates normal lifecycles (local_closed,
	// peer_closed) and tells what is not a verdict: answered keepalive
	// probes (as events) and TIME_WAIT reuse (as notices).
	ModeAll
	// ModeEvents (--events) tells every decoded kernel event and tracks
	// nothing.
	ModeEvents
	// ModeRoutine tells the verdicts of ModeDefault and the routine
	// happenings of ModeAll, without normal lifecycles: the lab's account,
	// whose recorded verdicts a default tracker must give again on replay.
	ModeRoutine
)

// kernelSendsAll says whether the kernel half sends every record (and
// then writes them without waking the reader: see tracer.PollInterval).
func (m Mode) kernelSendsAll() bool { return m != ModeDefault }

// narratesLifecycles says whether normal lifecycles are narrated.
func (m Mode) narratesLifecycles() bool { return m == ModeAll }

// tellsRoutine says whether answered probes and TIME_WAIT reuse are told.
func (m Mode) tellsRoutine() bool { return m == ModeAll || m == ModeRoutine }

// Config says what to watch and what to tell.
type Config struct {
	Mode Mode
	// Filter keeps only matching connections; applied once to every item
	// told, so counts match what was printed. Its NetNS and Port also
	// filter in the kernel (see Kernel).
	Filter Filter
	// MaxConns bounds the tracker (0: its default).
	MaxConns int
	// CloseWaitAfter is the tracker's close_wait_stuck threshold
	// (tracker.Config.CloseWaitAfter: 0 its default, negative never).
	CloseWaitAfter time.Duration
	// Record, when set, receives every kernel event as a recording
	// (wire.WriteRecord), replayable in tests.
	Record io.Writer
	// NoExisting skips the start-up look at connections that predate
	// tcpwatch (sock_diag).
	NoExisting bool
	// Accept, when set, decides per event whether it belongs to this run
	// at all (the lab keeps its own namespaces); rejected events are
	// neither tracked nor counted.
	Accept func(*wire.Event) bool
	// Warn receives problems that do not stop the run (a namespace whose
	// existing connections could not be listed).
	Warn func(error)
	// Cgroups names the cgroup of each item told (and decides
	// Filter.Container and Filter.Cgroup); nil leaves them unnamed.
	Cgroups *containers.Resolver
	// Observe, when set, is told the run's stats so far about once a
	// second and at the end, from the engine's goroutine (for metrics);
	// it must not keep Stats.Narratives, which the engine goes on counting.
	Observe func(Stats)
	// ReconcileEvery is how often the tracker is compared with the
	// kernel's socket tables (sock_diag), so that connections whose end
	// was lost do not stay forever; 0 means ReconcileEvery, negative
	// never. It also runs soon after every loss report.
	ReconcileEvery time.Duration
	// LiveTable reads the socket tables (nil: sock_diag), for tests.
	LiveTable LiveTable
	// ListenerEvery is how often the accept queues of the listeners the
	// tracker knows are read (accept_queue_overflow); 0 means
	// ListenerEvery, negative never. ReadListeners replaces sock_diag.
	ListenerEvery time.Duration
	ReadListeners ReadListeners
	// ReadSynacks replaces the source's SYN-ACK counters (nil: the
	// source's SynackRetransmits, when it has one).
	ReadSynacks ReadSynacks
	// ScanCloseWaits, when set, finds the sockets stuck in CLOSE_WAIT
	// (close_wait_stuck) every CloseWaitEvery (0: CloseWaitEvery of the
	// threshold); without it nothing is told stuck.
	ScanCloseWaits ScanCloseWaits
	CloseWaitEvery time.Duration
}

// Kernel completes the kernel half's config from this one: whether the
// kernel sends every record (--all, --events) and its filters. One --port
// and one --netns thus decide both the kernel's filter and user space's.
func (c *Config) Kernel(k tracer.Config) tracer.Config {
	k.All = c.Mode.kernelSendsAll()
	// Only --all: --events tells every record as the kernel saw it, and
	// the lab's ModeRoutine records every one for its replays.
	k.Summarize = c.Mode == ModeAll
	k.FilterNetNS, k.FilterPort = c.Filter.NetNS, c.Filter.Port
	return k
}

// Stats are a run's counters: so far (Config.Observe), or in all (Run).
type Stats struct {
	Events uint64 // kernel records read
	// Lost is every kernel record lost: RingFull (no room in the ring
	// buffer) plus Recursion (a program run skipped on a busy CPU).
	Lost, RingFull, Recursion uint64
	// Skipped: what the kernel half could not keep for want of room, and
	// so did not send (tracer.Skipped); not part of Lost.
	Skipped     tracer.Skipped
	Narratives  map[string]int // told (after the filter), by verdict
	Evictions   uint64         // connections the tracker forgot to stay in bounds
	Tracked     int            // connections the tracker holds
	Reconciled  uint64         // connections dropped: the kernel no longer had them, their end lost
	EndedUnseen uint64         // ... their end unreported by design (healthy, from before tcpwatch)
	// EndsAtDeadline: ends told at the kernel's deadline, the kill's
	// records never having arrived (narratives marked end_unseen).
	EndsAtDeadline uint64
}

// Engine reads one source, tracks, enriches, filters and tells.
type Engine struct {
	cfg     Config
	src     Source
	tracker *tracker.Tracker // nil in ModeEvents
	owners  *owners.Index
	rec     *reconciler
	listen  *listenWatch
	mem     memoryReturn
	sink    Sink
	err     error // the sink's first error: it ends the run
	item    Item  // the one being told (see tell)
	stats   Stats
	clock   schedule
	ports   portUse // local_ports_exhausted's table reads (ports.go)
	// closeWaits: the scans for close_wait_stuck (closewait.go)
	closeWaits *closeWaitWatch
	// existing: the socket tables read by ReadExisting, told to the
	// tracker when Run starts (existing.go)
	existing *existingRead
}

// New builds an engine on src (a tracer.Tracer, or a fake in tests). It
// neither opens nor closes src.
func New(src Source, cfg Config) *Engine {
	e := &Engine{cfg: cfg, src: src, owners: owners.NewIndex(), stats: Stats{Narratives: map[string]int{}}}
	if cfg.Mode != ModeEvents {
		e.tracker = e.newTracker()
		e.mem.release = e.tracker.ReleaseReusable
		e.rec = newReconciler(&cfg)
		e.listen = newListenWatch(&cfg, src)
		e.closeWaits = newCloseWaitWatch(&cfg)
	}
	return e
}

// Run reads until ctx ends (or the sink fails) and returns the run's stats.
// A closed output ends the run with the sink's error.
func (e *Engine) Run(ctx context.Context, sink Sink) (Stats, error) {
	e.sink = sink
	defer context.AfterFunc(ctx, func() { e.src.Stop() })()
	e.addExisting()
	e.clock.start(e.cfg.Mode, time.Now())
	var ev wire.Event
	var now time.Time
	stale := 0 // records handled since now was read
	for e.err == nil {
		// A clock reading per record was a tenth of --all's user space
		// under churn (BenchmarkReplayAll). While records wait in the
		// ring the loop reads the clock every clockEvery records (tens of
		// microseconds); whenever the ring runs dry, before a Read that
		// may wait, and after a wait, it reads it again.
		if stale == 0 || stale >= clockEvery {
			now, stale = time.Now(), 0
		}
		e.periodic(now)
		if e.err != nil {
			break
		}
		e.src.SetDeadline(e.clock.nextTick)
		err := e.src.Read(&ev)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			stale = 0
			continue
		}
		if errors.Is(err, tracer.ErrClosed) {
			break
		}
		if err == nil {
			err = e.handle(&ev, now)
		}
		if err != nil {
			return e.stats, err
		}
		stale++
		if !e.src.Buffered() {
			stale = 0
		}
	}
	if e.err != nil {
		return e.stats, e.err
	}
	return e.finish()
}

// finish tells what the tracker still holds, the last losses, and flushes.
func (e *Engine) finish() (Stats, error) {
	if e.tracker != nil {
		e.tracker.Flush(wire.MonotonicNow())
		if e.err != nil {
			return e.stats, e.err
		}
	}
	if err := e.checkLoss(); err != nil { // the tracker's counters too
		return e.stats, err
	}
	return e.stats, e.sink.Flush()
}

// trackerStats copies the tracker's counters into the run's.
func (e *Engine) trackerStats() {
	if e.tracker == nil {
		return
	}
	ts := e.tracker.Stats()
	e.stats.Evictions, e.stats.Tracked, e.stats.Reconciled = ts.Evictions, ts.Tracked, ts.Reconciled
	e.stats.EndedUnseen, e.stats.EndsAtDeadline = ts.EndedUnseen, ts.EndsAtDeadline
}
