package engine

import (
	"fmt"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// addExisting tells the tracker about the connections that were there
// before tcpwatch: owners from /proc, trouble narrated at once. Nothing
// of theirs is touched: the kernel's socket table and /proc are only read.
func (e *Engine) addExisting() {
	if e.tracker == nil || e.cfg.NoExisting {
		return
	}
	socks, err := sockdiag.Snapshot(e.cfg.Filter.NetNS)
	if err != nil && e.cfg.Warn != nil {
		// Partial knowledge is still knowledge: the namespaces that
		// answered are tracked.
		e.cfg.Warn(fmt.Errorf("existing connections only partly known: %w", err))
	}
	mono, wall := wire.MonotonicNow(), time.Now()
	for i := range socks {
		s := &socks[i]
		if e.cfg.Accept != nil {
			probe := wire.Event{NetNS: s.NetNS, Local: s.Local, Remote: s.Remote}
			if !e.cfg.Accept(&probe) {
				continue
			}
		}
		x := tracker.Existing{Cookie: s.Cookie, NetNS: s.NetNS, Local: s.Local, Remote: s.Remote,
			State: s.State, Inode: s.Inode, CAState: s.CAState, Retransmits: s.Retransmits,
			Backoff: s.Backoff, Probes: s.Probes, RTO: s.RTO, RTOMax: s.RTOMax, AckAge: s.LastAckRecv,
			Settings: s.Settings}
		if s.PID != 0 {
			x.Owner = tracker.Owner{PID: s.PID, Comm: s.Comm, Source: wire.OwnerProcfs}
		}
		e.tracker.AddExisting(mono, wall, &x)
	}
}
