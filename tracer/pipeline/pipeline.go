// Package pipeline is tcpwatch's one path from the kernel to a reader:
// open the tracer, read the ring buffer, decode, track, filter, and hand
// narratives (or raw events) to a sink. The watch command, the lab and the
// tests all run this same loop.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/owners"
	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Options say what to watch and what to tell.
type Options struct {
	Tracer tracer.Config
	// CloseWaitAfter is the tracker's close_wait_stuck threshold
	// (tracker.Config.CloseWaitAfter: 0 the default, negative never).
	CloseWaitAfter time.Duration
	// Events hands every decoded kernel event to the sink instead of
	// narratives.
	Events bool
	// All also narrates normal lifecycles (local_closed, peer_closed).
	All bool
	// Routine also tells what is not a verdict: answered keepalive probes
	// (as events) and TIME_WAIT reuse (as notices).
	Routine bool
	// MaxConns bounds the tracker (0: its default).
	MaxConns int
	// Filter keeps only matching connections; applied to every record
	// told, so counts match what was printed.
	Filter Filter
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
	// Cgroups names the cgroup of each narrative and notice (and decides
	// Filter.Container and Filter.Cgroup); nil leaves them unnamed.
	Cgroups *containers.Resolver
	// Observe, when set, is told the run's counters about once a second
	// and at the end, from the pipeline's goroutine (for metrics).
	Observe func(Progress)

	// ReconcileEvery is how often the tracker is compared with the
	// kernel's socket tables (sock_diag), so that connections whose end
	// was lost do not stay forever; 0 means ReconcileEvery, negative
	// never. It also runs soon after every loss report.
	ReconcileEvery time.Duration
	// LiveTable reads the socket tables (nil: sock_diag), for tests.
	LiveTable LiveTable
}

// Progress is the run's counters so far.
type Progress struct {
	Events              uint64 // kernel records read
	RingFull, Recursion uint64 // kernel records lost, by cause
	Tracked             int    // connections the tracker holds
	Evictions           uint64 // connections it forgot to stay in bounds
}

// Filter keeps the connections a person asked about. Zero values match
// everything.
type Filter struct {
	PID   uint32
	Comm  string
	Addr  netip.Prefix
	Port  uint16
	NetNS uint32
	// Container keeps connections whose container id starts with it;
	// Cgroup those whose cgroup path starts with it. Both are decided in
	// user space on the resolved cgroup (Options.Cgroups).
	Container string
	Cgroup    string
}

// MatchCgroup says whether a connection in the cgroup described by info
// passes the Container and Cgroup parts of the filter.
func (f *Filter) MatchCgroup(info containers.Info) bool {
	switch {
	case f.Container != "" && (info.ID == "" || !strings.HasPrefix(info.ID, f.Container)):
		return false
	case f.Cgroup != "" && (info.Path == "" || !strings.HasPrefix(info.Path, f.Cgroup)):
		return false
	}
	return true
}

// cgroupMatch resolves a cgroup id for the filter; without a cgroup part
// in the filter nothing is resolved.
func (p *Pipeline) cgroupMatch(id uint64) bool {
	if p.opts.Filter.Container == "" && p.opts.Filter.Cgroup == "" {
		return true
	}
	return p.opts.Filter.MatchCgroup(p.opts.Cgroups.Lookup(id))
}

// Match says whether a connection passes the filter.
func (f *Filter) Match(netns uint32, local, remote netip.AddrPort, pid uint32, comm string) bool {
	switch {
	case f.NetNS != 0 && netns != f.NetNS:
		return false
	case f.Port != 0 && local.Port() != f.Port && remote.Port() != f.Port:
		return false
	case f.PID != 0 && pid != f.PID:
		return false
	case f.Comm != "" && comm != f.Comm:
		return false
	case f.Addr.IsValid() && !f.Addr.Contains(local.Addr().Unmap()) && !f.Addr.Contains(remote.Addr().Unmap()):
		return false
	}
	return true
}

// Sink receives what the pipeline tells, one call at a time.
type Sink interface {
	Narrative(*tracker.Narrative) error
	Notice(*tracker.Notice) error
	Event(*wire.Event, tcp.ResetReasons) error
	// Loss reports records the kernel could not deliver, as they happen.
	Loss(Loss) error
}

// Flusher is a Sink that holds what it is told until Flush; the pipeline
// flushes it whenever it has read every record the ring held (before it
// waits for more) and at every tick, so nothing waits longer than a tick.
type Flusher interface {
	Flush() error
}

// Loss is the kernel's count of records it could not deliver, in total
// since the start, and what it adds since the last report.
type Loss struct {
	Total, New uint64
	// RingFull and Recursion split Total: the ring buffer had no room, or
	// a program could not run because another was already running on
	// that CPU.
	RingFull, Recursion uint64
}

// Stats sum up a run.
type Stats struct {
	Events     uint64 // kernel records read
	Lost       uint64 // kernel records lost (ring full or program recursion)
	Narratives map[string]int
	Evictions  uint64
	Tracked    int
	Reconciled uint64 // connections dropped: the kernel no longer had them
}

// Pipeline is an open tracer and the tracker it feeds.
type Pipeline struct {
	opts    Options
	Tracer  *tracer.Tracer
	src     recordSource // the Tracer; a replay in tests of the loop's timing
	tracker *tracker.Tracker
	owners  *owners.Index
	told    map[string]int
	sinkErr error
	sink    Sink
	rec     *reconciler
}

// Open loads and attaches the kernel half. Hooks the kernel lacks are in
// Tracer.Hooks, not errors.
func Open(opts Options) (*Pipeline, error) {
	t, err := tracer.New(opts.Tracer)
	if err != nil {
		return nil, err
	}
	return &Pipeline{opts: opts, Tracer: t, src: t, owners: owners.NewIndex(), told: map[string]int{}}, nil
}

// recordSource is what the reading loop needs of the tracer.
type recordSource interface {
	Read(ev *wire.Event) error
	SetDeadline(deadline time.Time)
	Buffered() bool
	Losses() (tracer.Losses, error)
	Stop() error
}

// Close detaches everything.
func (p *Pipeline) Close() error { return p.Tracer.Close() }

// tickEvery is how often the tracker is told the time when no record
// comes, so that verdicts leave promptly.
const tickEvery = 100 * time.Millisecond

// inFlight is how long a record may take from its timestamp to the ring
// (the rest of the program that writes it): the clock a drained ring tells
// the tracker is held back by it.
const inFlight = 10 * time.Millisecond

// lossEvery is how often the kernel's loss counters are read.
const lossEvery = time.Second

// Run reads until ctx ends (or the sink fails) and returns the run's stats.
// A closed output ends the run with the sink's error.
func (p *Pipeline) Run(ctx context.Context, sink Sink) (Stats, error) {
	p.sink = sink
	flusher, _ := sink.(Flusher)
	stop := context.AfterFunc(ctx, func() { p.src.Stop() })
	defer stop()
	reasons := p.Tracer.Kernel.ResetReasons
	if !p.opts.Events {
		cfg := tracker.Config{All: p.opts.All, MaxConns: p.opts.MaxConns, ResetReasons: reasons, Owners: p.owners,
			CloseWaitAfter: p.opts.CloseWaitAfter}
		if p.opts.Routine {
			cfg.Notices = p.notice
		}
		p.tracker = tracker.New(cfg, p.narrative)
		if !p.opts.NoExisting {
			p.addExisting()
		}
		p.rec = newReconciler(&p.opts)
	}

	var (
		ev       wire.Event
		stats    Stats
		lastLoss uint64
		nextLoss = time.Now().Add(lossEvery)
		mem      memoryReturn
	)
	tick := tickEvery
	if p.opts.All || p.opts.Events {
		tick = tracer.PollInterval
	}
	checkLoss := func() error {
		l, err := p.loss()
		if err != nil {
			return err
		}
		stats.Lost = l.Total
		if p.opts.Observe != nil {
			pr := Progress{Events: stats.Events, RingFull: l.RingFull, Recursion: l.Recursion}
			if p.tracker != nil {
				ts := p.tracker.Stats()
				pr.Tracked, pr.Evictions = ts.Tracked, ts.Evictions
			}
			p.opts.Observe(pr)
		}
		if l.Total > lastLoss {
			l.New = l.Total - lastLoss
			lastLoss = l.Total
			if p.tracker != nil {
				p.tracker.RecordsLost()
				p.rec.soon()
			}
			return sink.Loss(l)
		}
		return nil
	}
	nextTick := time.Now().Add(tick)
	for p.sinkErr == nil {
		now := time.Now()
		if now.After(nextLoss) {
			nextLoss = now.Add(lossEvery)
			if err := checkLoss(); err != nil {
				p.sinkErr = err
				break
			}
		}
		// The tracker hears the clock when no record comes, so that
		// verdicts leave on time on a quiet host; records it does not
		// accept tell it the time too (below). But only an empty ring
		// means it has read everything written before now: while records
		// wait unread (a slow reader, qemu), the clock would end a close's
		// grace before the reset or error that follows it is read, and
		// decide the verdict without them.
		if now.After(nextTick) {
			nextTick = now.Add(tick)
			if p.tracker != nil {
				mono := wire.MonotonicNow()
				drained := !p.src.Buffered()
				p.rec.step(p.tracker, drained, 0, now, p.opts.Warn)
				if drained {
					p.tracker.Tick(mono - inFlight)
				}
				// Lost records count as read: a ring that overflows is a
				// flood the reader went through at full speed.
				mem.afterTick(p.tracker.Stats().Tracked, stats.Events+stats.Lost, now)
			}
			if flusher != nil && p.sinkErr == nil {
				p.sinkErr = flusher.Flush()
			}
		}
		// Out of records: what the sink holds goes out before the wait.
		if flusher != nil && p.sinkErr == nil && !p.src.Buffered() {
			p.sinkErr = flusher.Flush()
		}
		if p.sinkErr != nil {
			break
		}
		p.src.SetDeadline(nextTick)
		err := p.src.Read(&ev)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if errors.Is(err, tracer.ErrClosed) {
			break
		}
		if err != nil {
			return stats, err
		}
		if p.opts.Accept != nil && !p.opts.Accept(&ev) {
			if p.tracker != nil {
				p.tracker.Tick(ev.Mono)
			}
			continue
		}
		stats.Events++
		if p.opts.Record != nil {
			if err := wire.WriteRecord(p.opts.Record, &ev); err != nil {
				return stats, fmt.Errorf("--record: %w", err)
			}
		}
		if p.tracker == nil {
			if p.opts.Filter.Match(ev.NetNS, ev.Local, ev.Remote, ev.PID, ev.Comm()) && p.cgroupMatch(ev.CgroupID) {
				p.sinkErr = sink.Event(&ev, reasons)
			}
			continue
		}
		p.tracker.Handle(&ev)
		p.rec.step(p.tracker, false, ev.Mono, now, p.opts.Warn)
		// With --all, routine happenings that are not narratives still show.
		if p.opts.Routine && ev.Kind == wire.KindKeepalive && ev.Flags&wire.FlagProbeAnswered != 0 &&
			p.opts.Filter.Match(ev.NetNS, ev.Local, ev.Remote, ev.PID, ev.Comm()) && p.cgroupMatch(ev.CgroupID) && p.sinkErr == nil {
			p.sinkErr = sink.Event(&ev, reasons)
		}
	}
	if p.sinkErr != nil {
		return stats, p.sinkErr
	}
	if p.tracker != nil {
		p.tracker.Flush(wire.MonotonicNow())
		if p.sinkErr != nil {
			return stats, p.sinkErr
		}
		ts := p.tracker.Stats()
		stats.Evictions, stats.Tracked = ts.Evictions, ts.Tracked
		stats.Reconciled = ts.Reconciled
	}
	stats.Narratives = p.told
	if err := checkLoss(); err != nil {
		return stats, err
	}
	if flusher != nil {
		if err := flusher.Flush(); err != nil {
			return stats, err
		}
	}
	return stats, nil
}

func (p *Pipeline) loss() (Loss, error) {
	l, err := p.src.Losses()
	if err != nil {
		return Loss{}, err
	}
	return Loss{Total: l.RingFull + l.Recursion, RingFull: l.RingFull, Recursion: l.Recursion}, nil
}

func (p *Pipeline) narrative(n *tracker.Narrative) {
	n.Cgroup = p.opts.Cgroups.Lookup(n.CgroupID)
	if !p.opts.Filter.MatchCgroup(n.Cgroup) {
		return
	}
	if p.sinkErr != nil || !p.opts.Filter.Match(n.NetNS, n.Local, n.Remote, n.Owner.PID, n.Owner.Comm) {
		return
	}
	p.told[string(n.Verdict)]++
	p.sinkErr = p.sink.Narrative(n)
}

func (p *Pipeline) notice(n *tracker.Notice) {
	n.Cgroup = p.opts.Cgroups.Lookup(n.CgroupID)
	if !p.opts.Filter.MatchCgroup(n.Cgroup) {
		return
	}
	if p.sinkErr != nil || !p.opts.Filter.Match(n.NetNS, n.Local, n.Remote, n.Owner.PID, n.Owner.Comm) {
		return
	}
	p.sinkErr = p.sink.Notice(n)
}

// addExisting tells the tracker about the connections that were there
// before tcpwatch: owners from /proc, trouble narrated at once. Nothing
// of theirs is touched: the kernel's socket table and /proc are only read.
func (p *Pipeline) addExisting() {
	socks, err := sockdiag.Snapshot(p.opts.Tracer.FilterNetNS)
	if err != nil && p.opts.Warn != nil {
		// Partial knowledge is still knowledge: the namespaces that
		// answered are tracked.
		p.opts.Warn(fmt.Errorf("existing connections only partly known: %w", err))
	}
	mono, wall := wire.MonotonicNow(), time.Now()
	for i := range socks {
		s := &socks[i]
		if p.opts.Accept != nil {
			probe := wire.Event{NetNS: s.NetNS, Local: s.Local, Remote: s.Remote}
			if !p.opts.Accept(&probe) {
				continue
			}
		}
		e := tracker.Existing{Cookie: s.Cookie, NetNS: s.NetNS, Local: s.Local, Remote: s.Remote,
			State: s.State, Inode: s.Inode, CAState: s.CAState, Retransmits: s.Retransmits,
			Backoff: s.Backoff, Probes: s.Probes, RTO: s.RTO, RTOMax: s.RTOMax, AckAge: s.LastAckRecv,
			Settings: s.Settings}
		if s.PID != 0 {
			e.Owner = tracker.Owner{PID: s.PID, Comm: s.Comm, Source: tracker.OwnerProcfs}
		}
		p.tracker.AddExisting(mono, wall, &e)
	}
}

// memoryReturn gives memory back to the system after a burst: the Go runtime
// would otherwise keep the peak's pages until a GC cycle that a quiet
// tcpwatch, allocating nothing, may not run for minutes. Two kinds of burst
// count: the tracker shrinking a lot (a burst of connections ended, or a
// reconciliation dropped entries whose end was lost), and a flood of
// records that has stopped (their decoding's garbage).
type memoryReturn struct {
	peak       int       // most connections tracked since the last return
	events     uint64    // records read at the last tick
	sinceFree  uint64    // records read since the last return
	lastRecord time.Time // when the count last moved
}

const (
	// returnAfterPeak is the smallest shrinking burst worth a forced
	// return: about 2 KiB a connection, so 4 MiB and more.
	returnAfterPeak = 2048
	// returnAfterRecords is the smallest flood worth one, returned once
	// no record has come for quietBeforeReturn. A loss storm in the
	// kernel matrix's 7.3 guest (about 10,000 connections, never 2048
	// tracked at once) left VmRSS 17 MiB above idle, unchanged 15 s later.
	returnAfterRecords = 20000
	quietBeforeReturn  = time.Second
)

// afterTick is told, at every tick, the connections tracked, the records
// read (or lost) so far and the time; it says whether it returned memory.
func (m *memoryReturn) afterTick(tracked int, events uint64, now time.Time) bool {
	m.peak = max(m.peak, tracked)
	if events != m.events || m.lastRecord.IsZero() {
		m.sinceFree += events - m.events
		m.events, m.lastRecord = events, now
	}
	shrunk := m.peak >= returnAfterPeak && tracked < m.peak/4
	floodOver := m.sinceFree >= returnAfterRecords && now.Sub(m.lastRecord) >= quietBeforeReturn
	if !shrunk && !floodOver {
		return false
	}
	debug.FreeOSMemory()
	m.peak, m.sinceFree = tracked, 0
	return true
}
