package engine

import (
	"fmt"
	"io"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/exposure"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// ScanCloseWaits reads the sockets stuck in CLOSE_WAIT past the threshold
// (tracer.SocketReader with MarkCloseWait, see CloseWaitScanner).
type ScanCloseWaits func() ([]tracker.CloseWaitSocket, error)

// CloseWaitEvery is the scan period for a close_wait_stuck threshold:
// half of it, within 1 s and 30 s, so a process is told at most half a
// threshold late (30 s late at the default minute).
func CloseWaitEvery(after time.Duration) time.Duration {
	return min(max(after/2, time.Second), 30*time.Second)
}

// CloseWaitScanner reads r (opened with MarkCloseWait) for the stuck
// sockets of the namespaces keep accepts (nil: all; onlyNetNS, if not 0,
// reads that one only), their owners named from /proc.
func CloseWaitScanner(r *tracer.SocketReader, onlyNetNS uint32, keep func(netns uint32) bool) ScanCloseWaits {
	return func() ([]tracker.CloseWaitSocket, error) {
		socks, err := r.Read(onlyNetNS)
		var stuck []exposure.Socket
		for _, s := range socks {
			if s.CloseWaitStuck && (keep == nil || keep(s.NetNS)) {
				stuck = append(stuck, s)
			}
		}
		if len(stuck) == 0 {
			return nil, err
		}
		tracer.ResolveOwners(stuck, nil) // a walk of /proc only when some are stuck
		out := make([]tracker.CloseWaitSocket, len(stuck))
		for i, s := range stuck {
			out[i] = tracker.CloseWaitSocket{Cookie: s.Cookie, NetNS: s.NetNS, Local: s.Local, Remote: s.Remote,
				Inode: s.Inode, CgroupID: s.CgroupID, For: s.CloseWaitFor,
				Owner: tracker.Owner{PID: s.PID, Comm: s.Comm, Source: wire.OwnerProcfs}}
			if s.PID == 0 {
				out[i].Owner.Source = wire.OwnerUnknown
			}
		}
		return out, err
	}
}

// closeWaitWatch runs the scans away from the reading loop and hands each
// result to the tracker on the loop's goroutine.
type closeWaitWatch struct {
	every   time.Duration
	scan    ScanCloseWaits
	next    time.Time
	running bool
	result  chan closeWaitResult
	warned  bool
}

type closeWaitResult struct {
	mono  time.Duration
	stuck []tracker.CloseWaitSocket
	err   error
}

func newCloseWaitWatch(cfg *Config) *closeWaitWatch {
	if cfg.ScanCloseWaits == nil || cfg.CloseWaitAfter < 0 {
		return nil
	}
	every := cfg.CloseWaitEvery
	if every <= 0 {
		after := cfg.CloseWaitAfter
		if after == 0 {
			after = tracker.DefaultCloseWaitAfter
		}
		every = CloseWaitEvery(after)
	}
	return &closeWaitWatch{every: every, scan: cfg.ScanCloseWaits, next: time.Now().Add(every), result: make(chan closeWaitResult, 1)}
}

// step hands a finished scan to the tracker (and the recording) and starts the next one when
// it is due.
func (w *closeWaitWatch) step(t *tracker.Tracker, record io.Writer, now time.Time, warn func(error)) {
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
		t.CloseWaitScan(r.mono, r.stuck)
		if record != nil {
			if err := tracker.WriteCloseWaitScan(record, r.mono, r.stuck); err != nil && warn != nil {
				warn(fmt.Errorf("--record: %w", err))
			}
		}
	default:
	}
	if w.running || now.Before(w.next) {
		return
	}
	w.next = now.Add(w.every)
	w.running = true
	go func() {
		mono := wire.MonotonicNow()
		stuck, err := w.scan()
		w.result <- closeWaitResult{mono: mono, stuck: stuck, err: err}
	}()
}
