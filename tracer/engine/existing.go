package engine

import (
	"fmt"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// existingRead is one reading of the socket tables at start-up.
type existingRead struct {
	socks []sockdiag.Socket
	err   error
}

// ReadExisting reads the connections that are there before tcpwatch now,
// for Run to tell the tracker. A caller that signals readiness before Run
// (tcpwatch drops its capabilities between the two) calls it first, so
// that a connection closed after that signal is still one that predates
// tcpwatch: read in Run, on a slow machine, its socket could already be
// gone and its end never counted. Without it, Run reads the tables itself.
func (e *Engine) ReadExisting() {
	if e.tracker == nil || e.cfg.NoExisting {
		return
	}
	socks, err := sockdiag.Snapshot(e.cfg.Filter.NetNS)
	e.existing = &existingRead{socks: socks, err: err}
}

// addExisting tells the tracker about the connections that were there
// before tcpwatch: owners from /proc, trouble narrated at once. Nothing
// of theirs is touched: the kernel's socket table and /proc are only read.
func (e *Engine) addExisting() {
	if e.tracker == nil || e.cfg.NoExisting {
		return
	}
	if e.existing == nil {
		e.ReadExisting()
	}
	socks, err := e.existing.socks, e.existing.err
	e.existing = nil
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
			ReadAt: s.ReadAt, RetransmitArmed: s.RetransmitArmed, RetransmitIn: s.RetransmitIn, Settings: s.Settings}
		if s.PID != 0 {
			x.Owner = tracker.Owner{PID: s.PID, Comm: s.Comm, Source: wire.OwnerProcfs}
		}
		e.tracker.AddExisting(mono, wall, &x)
	}
}
