package engine

import (
	"runtime/debug"
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

// gcPercentAll is the garbage collector's target with --all and --events,
// where every record leaves garbage (a connection entry, its timeline, a
// narrative, a line) and the live heap is small (the connections tracked):
// at Go's default of 100 the collector was a third of the replay
// benchmark's CPU (BenchmarkReplayAll: about 120,000 connections per
// CPU-second at 100, 160,000 at 400). The heap may then grow to five times
// what is live between collections, bounded by memoryLimitAll; a flood's
// end still gives the pages back (memoryReturn).
const (
	gcPercentAll   = 400
	memoryLimitAll = 512 << 20
)

// TuneGC sets the collector for mode, unless the person running tcpwatch
// set GOGC or GOMEMLIMIT: the process has one collector, so the command
// calls this, not New.
func TuneGC(mode Mode, getenv func(string) string) {
	if mode == ModeDefault {
		return // a record is rare: nothing to gain
	}
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercentAll)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimitAll)
	}
}
