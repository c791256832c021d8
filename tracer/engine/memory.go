package engine

import (
	"runtime/debug"
	"sync/atomic"
	"time"
)

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

	// The collector's pace (see lazyGC): records at the last tick, its
	// time, and whether the lazy target is on.
	tickEvents uint64
	tickAt     time.Time
	lazy       bool
	// release, when set, lets go of what is kept for reuse (the
	// tracker's spare entries and narratives) before a return: kept, a
	// storm's last few thousand would stay resident.
	release func()
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
	m.paceGC(events, now)
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
	if m.release != nil {
		m.release()
	}
	debug.FreeOSMemory()
	m.peak, m.sinceFree = tracked, 0
	return true
}

// While records flood in (--all or --events under churn) every record
// leaves garbage (a connection entry, its timeline, a narrative, a line)
// and the live heap is small: at Go's default GOGC of 100 the collector
// was a quarter of the replay benchmark's CPU (BenchmarkReplayAll,
// unpaced: about 120,000 connections per CPU-second at 100, 160,000 at
// 400). So while they come faster than lazyAbove a second the target is
// gcPercentFlood, under a soft limit of memoryLimitAll; below lazyBelow it
// is 100 again, so that the heap at rest stays within twice what is live
// (at 400 throughout, VmRSS grew by 10-14 MiB in the 15 s after a loss
// storm while the machine's other connections went on).
const (
	gcPercentFlood = 400
	memoryLimitAll = 512 << 20
	lazyAbove      = 20000 // records a second
	lazyBelow      = 5000
)

// lazyGC says whether the collector may be paced (TuneGC).
var lazyGC atomic.Bool

// TuneGC lets the engines pace the collector with the flow of records in
// mode, unless the person running tcpwatch set GOGC (or, for the soft
// limit, GOMEMLIMIT): the process has one collector, so the command calls
// this, not New.
func TuneGC(mode Mode, getenv func(string) string) {
	if mode == ModeDefault {
		return // a record is rare: nothing to gain
	}
	if getenv("GOGC") == "" {
		lazyGC.Store(true)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimitAll)
	}
}

// paceGC sets the collector's target from the records read since the last
// tick.
func (m *memoryReturn) paceGC(events uint64, now time.Time) {
	if !lazyGC.Load() {
		return
	}
	if m.tickAt.IsZero() || events < m.tickEvents {
		m.tickEvents, m.tickAt = events, now
		return
	}
	dt := now.Sub(m.tickAt).Seconds()
	if dt <= 0 {
		return
	}
	rate := float64(events-m.tickEvents) / dt
	m.tickEvents, m.tickAt = events, now
	switch {
	case !m.lazy && rate >= lazyAbove:
		debug.SetGCPercent(gcPercentFlood)
		m.lazy = true
	case m.lazy && rate < lazyBelow:
		debug.SetGCPercent(100)
		m.lazy = false
	}
}
