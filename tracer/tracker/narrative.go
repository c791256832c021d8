// Package tracker turns the kernel's event stream into one story per
// connection: it keeps each connection's state, recognises failures and
// outages, and decides the verdict a person in an incident can act on. It
// produces facts (counts, times, the kernel's figures); the words that
// explain them live in output/words.
//
// The files follow a connection's life, and one record's path through them
// runs down the page: tracker.go (Handle, the clock), conn.go (finding the
// connection, observing the record), opened.go (listeners, connections found
// at start-up, TIME_WAIT reuse), outage.go (retransmissions and recovery),
// keepalive.go, closing.go (the end and its verdict), told.go (the facts of
// a narrative as they were when the kernel decided, and its telling),
// held.go (a normal end held compact while it waits to be told).
package tracker

import (
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
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
	// ConnectAbandoned: the application gave up on a handshake whose SYNs
	// went unanswered and closed the connecting socket itself (its own
	// connect timeout), before the kernel's tcp_syn_retries budget ran out.
	ConnectAbandoned Verdict = "connect_abandoned"
)

// Episodes: the connection lives on.
const (
	Stalled          Verdict = "stalled"
	Recovered        Verdict = "recovered"
	KeepaliveProbing Verdict = "keepalive_probing"
	// ZeroWindow: see probe.go.
)

// Untold is the final verdict of a connection in an episode (stalled,
// keepalive_probing) that the kernel's socket table no longer has while
// its end never reached tcpwatch (the records that told it lost, when the
// kernel counted losses: LostRecords). It says so rather than guess (see
// Tracker.Reconcile).
const Untold Verdict = "untold"

// Verdicts lists every verdict, finals first.
var Verdicts = []Verdict{
	PeerClosed, LocalClosed, LocalProcessExited, PeerReset, PeerLostState, RetransmitTimeout,
	HostUnreachable, KeepaliveTimeout, LocalAbort, ConnectRefused, ConnectTimeout, ConnectAbandoned, Untold,
	Stalled, Recovered, KeepaliveProbing, ZeroWindow, AcceptQueueOverflow, SynackUnanswered,
	CloseWaitStuck, LocalPortsExhausted,
}

// Episode reports whether the verdict describes a connection that lives on.
func (v Verdict) Episode() bool {
	return v == Stalled || v == Recovered || v == KeepaliveProbing || v == ZeroWindow || v == AcceptQueueOverflow || v == SynackUnanswered ||
		v == CloseWaitStuck
}

// Owner is the process a connection belongs to.
type Owner struct {
	PID  uint32
	Comm string // the process's name: its thread-group leader's comm
	// Thread is extra detail: the name of the thread the kernel saw act
	// (connect, listen, close) when it is not the process's, "" otherwise
	// (redis-server's bio_aof_fsync closing a killed server's sockets).
	Thread string
	Source wire.OwnerSource
}

// Exact says whether the owner is the process that holds the socket, not
// a guess from its listener.
func (o Owner) Exact() bool {
	return o.PID != 0 && o.Source != wire.OwnerListener
}

// Budget is the kernel's deadline for a connection in an outage: how long
// it keeps retransmitting before it gives up, and which setting decided it.
type Budget struct {
	Limit   time.Duration
	Setting string // tcp_retries2, TCP_USER_TIMEOUT, tcp_orphan_retries, tcp_syn_retries
	Value   int    // the setting's value (retries, or milliseconds for TCP_USER_TIMEOUT)
}

// Step is one kernel event of a connection's timeline, as facts.
type Step struct {
	At          time.Duration // since the connection was first seen
	Kind        wire.Kind
	Flags       wire.Flags
	State, Old  tcp.State
	CA, OldCA   tcp.CAState
	Retransmits uint8
	Probes      uint8
	Detail      int32
	RTO         time.Duration
	ResetReason string // send_reset: the kernel's reason, when it gives one
	// Existing marks the entry of a connection found at start-up.
	Existing bool
	// Resent marks a retransmission that an expiry could not send, gone
	// out after it: the kernel restarted its retransmission timer then.
	Resent bool
	// Dropped, on a first step, counts older steps not kept.
	Dropped int
}

// Narrative is one verdict about one connection, with its evidence: the
// kernel's own figures, no prose.
type Narrative struct {
	Time    time.Time
	Mono    time.Duration // kernel CLOCK_MONOTONIC of Time
	Verdict Verdict
	// Final is false for episodes, and for connections still in an episode
	// when tcpwatch stops.
	Final bool

	Cookie uint64
	Local  netip.AddrPort
	Remote netip.AddrPort
	NetNS  uint32
	Inode  uint32
	Owner  Owner
	// CgroupID is the socket's cgroup v2 id (0 unknown); what it names
	// (path, container, pod) is the engine's to find, not the tracker's.
	CgroupID uint64
	// Incident is the id of the incident (two or more connections in
	// trouble with one peer) the connection is part of: filled by the
	// incident stage after the filters, not the tracker; "" alone.
	Incident string
	State    tcp.State
	// Orphan: no process held the socket any more (closed by its owner,
	// the kernel finishing the connection alone).
	Orphan bool
	// Connecting: the connection never got past the handshake.
	Connecting bool

	Errno       int32  // the error the application sees (positive), 0 if none
	ResetReason string // the kernel's reason for a reset we sent
	ResetState  tcp.State
	Retransmits int // RTO retransmissions in this outage (or SYN retransmissions)
	// FailedSends are retransmissions that never left this host, and the
	// error of the last one.
	FailedSends int
	FailedErrno int32
	Probes      int // keepalive probes sent unanswered
	Outage      time.Duration
	GiveUpIn    time.Duration // stalled/keepalive_probing: projected time left before the kernel gives up
	RTOs        []time.Duration
	// BackoffReverted: the RTO stopped doubling (RFC 6069 revert after an
	// ICMP unreachable), judged from the RTOs seen.
	BackoffReverted bool
	// TimerRestarted: a retransmission held on this host left after the
	// latest expiry and restarted the retransmission timer for a whole
	// RTO, so the kernel checks its budget that much later.
	TimerRestarted bool
	SkErrSoft      int32
	Budget         Budget
	CAState        tcp.CAState

	ExitSignal int  // local_process_exited: the signal that killed the owner
	ExitStatus int  // ... or its exit status
	SentReset  bool // the kernel sent RST (unread data), not FIN
	// LostRecords: the kernel dropped records while this connection was
	// tracked, so its story may have a hole.
	LostRecords bool
	// EndUnseen: the verdict is the kernel's at the episode's deadline
	// (GiveUpIn), not read from the records of the end: none came, and
	// the socket was gone from its table (or closed with no word of
	// why) after that deadline (deadline.go).
	EndUnseen bool
	// Begins: the first narrative of this stalled or keepalive_probing
	// episode (the later ones repeat it with new figures).
	Begins bool

	Timeline []Step
	Settings tcp.Settings
	RTOMax   time.Duration

	// close_wait_stuck (closewait.go): how many sockets its peers closed
	// the process holds (at the end: the most it held), for how long the
	// oldest has been in CLOSE_WAIT, and whether the episode ended with
	// the process's exit rather than its close().
	CloseWaitSockets int
	CloseWaitFor     time.Duration
	CloseWaitExited  bool

	// Ports: local_ports_exhausted only (ports.go), filled by whoever
	// tells the narrative.
	Ports PortUse

	// Where the episode's packets died (drops.go), and the window-probe
	// timer's episode (probe.go).
	DropFacts
	WindowFacts
	// A listener's accept queue (listeners.go).
	ListenerFacts

	// PeerEnd, on a final: the other end of this connection, where this
	// host has it too (another namespace, a container of the node), had
	// ended with this verdict, Before this narrative.
	PeerEnd *PeerEnd
}

// PeerEnd is how the other end of a connection was told on this host.
type PeerEnd struct {
	Verdict Verdict
	NetNS   uint32
	Before  time.Duration
}

// Notice is something worth showing with --all that is not a verdict about
// a failure: what became of a 4-tuple in TIME_WAIT.
type Notice struct {
	Time time.Time
	// Kind: "time_wait_reuse" (our connect() took over our TIME_WAIT),
	// "time_wait_syn_accepted" (the peer's SYN did), or one of the
	// NoticeTimeWait* (timewait.go: a SYN or RST the TIME_WAIT dropped).
	Kind   string
	Cookie uint64
	Local  netip.AddrPort
	Remote netip.AddrPort
	NetNS  uint32
	Owner  Owner
	// Age is how long ago the earlier connection on the 4-tuple closed.
	Age time.Duration
	// TimeWait: the kernel's figures of a NoticeTimeWait* notice.
	TimeWait wire.TimeWaitFacts
	// ResetReason: syn_answered_old_ack's reset, as the kernel names it
	// (6.10+), "" before.
	ResetReason string
	// CgroupID: as in Narrative.
	CgroupID uint64
	// CauseUnseen: a time_wait_syn_accepted on a kernel that cannot show
	// a TIME_WAIT ended early by an RST (Config.TimeWaitSeen false): the
	// SYN was newer, or an RST had ended the TIME_WAIT first.
	CauseUnseen bool
}
