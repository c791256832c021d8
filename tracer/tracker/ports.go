package tracker

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// LocalPortsExhausted: connect() failed with EADDRNOTAVAIL because no
// local port was free toward the destination: every port of
// ip_local_port_range is held by a socket to that address and port
// (TIME_WAIT ones included, unless tcp_tw_reuse lets connect() take one
// over). No SYN left; the application sees "Cannot assign requested
// address". A final verdict of a connection that never was.
const LocalPortsExhausted Verdict = "local_ports_exhausted"

// PortUse is what held the local ports when connect() found none: the
// sockets to the same destination, TIME_WAIT apart, and the namespace's
// settings. Not the tracker's to know: whoever tells the narrative reads
// it from the kernel's socket table (Known says it did).
type PortUse struct {
	// Failures is how many connect() calls of this owner to this
	// destination the narrative tells: the first is told at once, those
	// that follow within portsFold are counted and told together. The
	// tracker's; the rest is the socket table's.
	Failures    int
	Known       bool
	TimeWait    int // sockets in TIME_WAIT to the destination
	Other       int // sockets in other states to the destination
	RangeLo     int // ip_local_port_range
	RangeHi     int
	TwReuse     int // tcp_tw_reuse: 0 off, 1 on, 2 loopback only
	TimeWaitAll int // sockets in TIME_WAIT in the namespace, to any destination
}

// portsFold is how long the failures of one owner toward one destination
// are counted before they are told again: a client out of ports fails
// every connect() (Go's Dial itself tries three times), and one line per
// failure would bury everything else.
const portsFold = 10 * time.Second

type portsKey struct {
	netns  uint32
	pid    uint32
	remote netip.AddrPort
}

type portsFolded struct {
	told time.Duration // when the last narrative was told
	more int           // failures since, not told yet
	last *conn         // the latest of them
}

// portsExhausted recognises a connect() that found no local port (hook
// in onState) and tells it, or counts it toward the next telling.
func (t *Tracker) portsExhausted(c *conn, ev *wire.Event) bool {
	if ev.State != tcp.StateClose || ev.Flags&wire.FlagNoLocalPort == 0 {
		return false
	}
	c.connecting = true
	c.errno = int32(unix.EADDRNOTAVAIL)
	if t.ports == nil {
		t.ports = map[portsKey]*portsFolded{}
	}
	k := portsKey{c.netns, ev.PID, c.remote}
	if f := t.ports[k]; f != nil && ev.Mono-f.told < portsFold {
		f.more++
		f.last, c.pinned = c, true
		c.done = true // its destroy only removes it
		return true
	}
	t.ports[k] = &portsFolded{told: ev.Mono}
	c.done = true
	n := t.narrate(c, LocalPortsExhausted, true, ev.Mono)
	n.Ports.Failures = 1
	return true
}

// portsTick tells the failures counted for a fold that has passed (hook
// in Tick; all of them at Flush).
func (t *Tracker) portsTick(now time.Duration, all bool) {
	for k, f := range t.ports {
		if now-f.told < portsFold && !all {
			continue
		}
		if f.more == 0 {
			delete(t.ports, k)
			continue
		}
		n := t.narrate(f.last, LocalPortsExhausted, true, now)
		n.Ports.Failures = f.more
		f.told, f.more, f.last = now, 0, nil
	}
}
