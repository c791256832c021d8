package engine

import (
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// portUse tells a local_ports_exhausted narrative what held the ports:
// read from the namespace's socket table when it is told (its TIME_WAIT
// sockets live 60 s, so they are still there). A client that keeps
// failing fails many times a second: one table read per namespace and
// destination per second serves them all.
type portUse struct {
	seen map[portKey]portSeen
}

type portKey struct {
	netns uint32
	dst   netip.AddrPort
}

type portSeen struct {
	at  time.Time
	use tracker.PortUse
}

func (e *Engine) fillPortUse(n *tracker.Narrative) {
	if e.ports.seen == nil {
		e.ports.seen = map[portKey]portSeen{}
	}
	failures := n.Ports.Failures // the tracker's
	defer func() { n.Ports.Failures = failures }()
	k := portKey{n.NetNS, n.Remote}
	now := time.Now()
	if s, ok := e.ports.seen[k]; ok && now.Sub(s.at) < time.Second {
		n.Ports = s.use
		return
	}
	if len(e.ports.seen) > 1024 {
		clear(e.ports.seen)
	}
	u, err := sockdiag.PortsToward(n.NetNS, n.Remote)
	if err == nil {
		n.Ports = tracker.PortUse{Known: true, TimeWait: u.TimeWait, Other: u.Other, TimeWaitAll: u.TimeWaitAll,
			RangeLo: u.RangeLo, RangeHi: u.RangeHi, TwReuse: u.TwReuse}
	}
	e.ports.seen[k] = portSeen{now, n.Ports}
}
