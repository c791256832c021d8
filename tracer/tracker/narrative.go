// Package tracker turns the kernel's event stream into one story per
// connection: it keeps each connection's state, recognises failures and
// outages, and decides the verdict a person in an incident can act on.
package tracker

import (
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// Verdict is what happened to a connection.
type Verdict string

// Final verdicts: the connection is gone.
const (
	PeerClosed         Verdict = "peer_closed"
	LocalClosed        Verdict = "local_closed"
	LocalProcessExited Verdict = "local_process_exited"
	PeerReset          Verdict = "peer_reset"
	PeerLostState      Verdict = "peer_lost_state"
	RetransmitTimeout  Verdict = "retransmit_timeout"
	HostUnreachable    Verdict = "host_unreachable"
	KeepaliveTimeout   Verdict = "keepalive_timeout"
	LocalAbort         Verdict = "local_abort"
	ConnectRefused     Verdict = "connect_refused"
	ConnectTimeout     Verdict = "connect_timeout"
)

// Episodes: the connection lives on.
const (
	Stalled          Verdict = "stalled"
	Recovered        Verdict = "recovered"
	KeepaliveProbing Verdict = "keepalive_probing"
)

// Verdicts lists every verdict, finals first.
var Verdicts = []Verdict{
	PeerClosed, LocalClosed, LocalProcessExited, PeerReset, PeerLostState, RetransmitTimeout,
	HostUnreachable, KeepaliveTimeout, LocalAbort, ConnectRefused, ConnectTimeout,
	Stalled, Recovered, KeepaliveProbing,
}

// Step is one line of a connection's timeline.
type Step struct {
	At    time.Duration // since the connection was first seen
	Event string
}

// Narrative is one verdict about one connection, with its evidence.
type Narrative struct {
	Time    time.Time
	Verdict Verdict
	// Final is false for episodes, and for connections still in an episode
	// when tcpwatch stops.
	Final bool

	Cookie uint64
	Local  netip.AddrPort
	Remote netip.AddrPort
	NetNS  uint32
	PID    uint32
	Comm   string
	State  tcp.State

	Errno       int32  // the error the application sees (positive), 0 if none
	ResetReason string // the kernel's reason for a reset we sent
	Retransmits int    // RTO retransmissions in this outage (or SYN retransmissions)
	Probes      int    // keepalive probes sent unanswered
	Outage      time.Duration
	GiveUpIn    time.Duration // stalled/keepalive_probing: projected time left before the kernel gives up
	RTOs        []time.Duration

	ExitSignal int  // local_process_exited: the signal that killed the owner
	ExitStatus int  // ... or its exit status
	SentReset  bool // local_process_exited: the kernel sent RST (unread data), not FIN

	Summary     string
	Explanation string
	Timeline    []Step
	Settings    tcp.Settings
	RTOMax      time.Duration
}

// Episode reports whether the verdict describes a connection that lives on.
func (v Verdict) Episode() bool {
	return v == Stalled || v == Recovered || v == KeepaliveProbing
}

// Notice is something worth showing with --all that is not a verdict about
// a failure: today, a TIME_WAIT 4-tuple taken over by a new connection.
type Notice struct {
	Time        time.Time
	Kind        string // "time_wait_reuse"
	Cookie      uint64
	Local       netip.AddrPort
	Remote      netip.AddrPort
	NetNS       uint32
	PID         uint32
	Comm        string
	Summary     string
	Explanation string
}
