// Package exposure answers, before an outage, the question tcpwatch's
// narratives answer after one: if the peer of this connection vanished now
// (host down, cable pulled, silently dropped by a firewall), when would its
// kernel notice? It works from each socket's own settings, as the kernel
// half reads them from the socket (tracer.Exposure), and mirrors the
// kernel's timers: the keepalive timer while the connection is idle, the
// retransmission timer while it sends. It is pure: no kernel, no clock.
package exposure

import (
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// Source says where the value of a setting came from.
type Source string

const (
	FromSocket Source = "socket" // set on the socket itself (setsockopt)
	FromSysctl Source = "sysctl" // the socket's own value is 0: its namespace's sysctl decides
	FromKernel Source = "kernel" // a constant compiled into this kernel (TCP_RTO_MIN, TCP_RTO_MAX)
)

// Settings are what decides when a socket's kernel gives up on a silent
// peer, each with where it came from.
type Settings struct {
	Keepalive          bool // SO_KEEPALIVE
	KeepaliveIdle      time.Duration
	KeepaliveIdleFrom  Source
	KeepaliveIntvl     time.Duration
	KeepaliveIntvlFrom Source
	KeepaliveCount     uint8
	KeepaliveCountFrom Source
	UserTimeout        time.Duration // TCP_USER_TIMEOUT; 0 unset
	RTOMin             time.Duration // the socket's RTO floor (icsk_rto_min), 0 if the kernel has none
	RTOMax             time.Duration
	RTOMaxFrom         Source
	Retries2           uint8         // the namespace's tcp_retries2
	OrphanRetries      uint8         // the namespace's tcp_orphan_retries
	FinTimeout         time.Duration // how long an orphan waits for the peer's FIN in FIN_WAIT2
	FinTimeoutFrom     Source

	// The namespace's own keepalive sysctls, whether or not the socket
	// overrides them (tcp_keepalive_time, _intvl, _probes).
	NetKeepaliveIdle  time.Duration
	NetKeepaliveIntvl time.Duration
	NetKeepaliveCount uint8
}

// Socket is one TCP socket of the snapshot.
type Socket struct {
	Cookie        uint64
	NetNS         uint32
	Local, Remote netip.AddrPort
	State         tcp.State
	Inode         uint32
	UID           uint32
	CgroupID      uint64
	Orphan        bool // no process holds it any more (SOCK_DEAD)

	// Watch mode only (tracer.SocketReaderOptions.MarkCloseWait): how long
	// ago a read first found it in CLOSE_WAIT, and whether that passed the
	// threshold (the kernel half now sends its end).
	CloseWaitFor   time.Duration
	CloseWaitStuck bool

	// The owner: the process holding the socket's inode, "" when no
	// process does; the container its cgroup names.
	PID       uint32
	Comm      string
	Container containers.Info

	Idle        time.Duration // since the peer was last heard (the keepalive timer's measure)
	SinceSend   time.Duration // since data was last sent
	Unacked     uint32        // bytes sent and not acknowledged
	Unsent      uint32        // bytes written by the application, not sent yet
	Unread      uint32        // bytes received, not read by the application
	PacketsOut  uint32
	Retransmits uint8
	ProbesOut   uint8
	RTO         time.Duration
	SRTT        time.Duration

	Settings Settings
}

// Mechanism is the kernel code that would notice the silent peer.
type Mechanism string

const (
	ByNothing       Mechanism = "none"               // nothing would: the connection stays forever
	ByKeepalive     Mechanism = "keepalive"          // tcp_keepalive_timer: idle, then unanswered probes
	ByUserTimeout   Mechanism = "user_timeout"       // TCP_USER_TIMEOUT
	ByRetries2      Mechanism = "tcp_retries2"       // tcp_write_timeout: the retransmission budget
	ByOrphanRetries Mechanism = "tcp_orphan_retries" // the same, for a socket no process holds
	ByFinTimeout    Mechanism = "tcp_fin_timeout"    // an orphan in FIN_WAIT2
	ByLinger2Reset  Mechanism = "linger2_reset"      // an orphan in FIN_WAIT2 with TCP_LINGER2 < 0: reset at once
)

// Detection is when the kernel would notice, counted from the moment the
// peer goes silent (idle) or from the first retransmission (sending).
type Detection struct {
	Never bool
	After time.Duration
	By    Mechanism
}

// Class buckets a detection time for fleets and metrics.
type Class int

const (
	Seconds Class = iota // under a minute
	Minutes              // under an hour
	Hours                // an hour or more
	Never                // nothing would ever notice
)

// Classes in the order a report tells them: the worst first.
var Classes = []Class{Never, Hours, Minutes, Seconds}

func (c Class) String() string {
	switch c {
	case Never:
		return "never"
	case Hours:
		return "hours"
	case Minutes:
		return "minutes"
	default:
		return "seconds"
	}
}

// ClassOf buckets one detection.
func ClassOf(d Detection) Class {
	switch {
	case d.Never:
		return Never
	case d.After >= time.Hour:
		return Hours
	case d.After >= time.Minute:
		return Minutes
	default:
		return Seconds
	}
}

// Assessment is what Assess tells about one connection.
type Assessment struct {
	// Idle is when the kernel would notice while the connection carries
	// nothing (nothing unacknowledged): only keepalive (possibly bounded
	// by TCP_USER_TIMEOUT) ever looks at an idle connection.
	Idle Detection
	// Sending is when it would notice once data is sent and goes
	// unanswered, counted from the first retransmission: the
	// retransmission budget tcp_retries2 models, or TCP_USER_TIMEOUT.
	Sending Detection
	// Class is the worse of the two: what the connection is exposed to.
	Class Class
	// SendingNow says the connection has data unacknowledged right now:
	// if the peer vanished, the sending figure would apply.
	SendingNow bool
}

// Assessed says whether a socket in this state holds a connection whose
// peer could vanish: the states the keepalive and retransmission timers
// look after. Listeners, TIME_WAIT, request sockets and handshakes are not.
func Assessed(s tcp.State) bool {
	switch s {
	case tcp.StateEstablished, tcp.StateCloseWait, tcp.StateFinWait1, tcp.StateFinWait2, tcp.StateLastAck, tcp.StateClosing:
		return true
	}
	return false
}

// Assess computes when the socket's kernel would notice a silent peer.
func Assess(s *Socket) Assessment {
	a := Assessment{SendingNow: s.Unacked > 0 || s.PacketsOut > 0}
	st := &s.Settings
	a.Sending = sendingDetection(s)
	switch {
	case s.Orphan && s.State == tcp.StateFinWait2:
		// tcp_keepalive_timer's first case: the orphan waits for the
		// peer's FIN for tcp_fin_time(), then is reset.
		if st.FinTimeoutFrom == FromSocket && st.FinTimeout < 0 {
			a.Idle = Detection{By: ByLinger2Reset}
		} else {
			a.Idle = Detection{After: st.FinTimeout, By: ByFinTimeout}
		}
	case s.Orphan:
		// An orphan in FIN_WAIT1, CLOSING or LAST_ACK has its FIN
		// unacknowledged: it is always sending.
		a.Idle = a.Sending
	case st.Keepalive:
		a.Idle = Detection{After: KeepaliveDetection(st), By: ByKeepalive}
	default:
		a.Idle = Detection{Never: true, By: ByNothing}
	}
	a.Class = max(ClassOf(a.Idle), ClassOf(a.Sending))
	return a
}

// KeepaliveDetection mirrors tcp_keepalive_timer: the first probe leaves
// after KeepaliveIdle of silence, then one every KeepaliveIntvl; the
// timer gives up, before sending the next probe, once KeepaliveCount went
// unanswered (7200 + 9 × 75 = 7875 s by default). With TCP_USER_TIMEOUT
// the count no longer matters: it gives up at the first expiry at which
// the silence has lasted the user timeout and at least one probe went out.
func KeepaliveDetection(st *Settings) time.Duration {
	if st.UserTimeout <= 0 {
		return st.KeepaliveIdle + time.Duration(st.KeepaliveCount)*st.KeepaliveIntvl
	}
	t := st.KeepaliveIdle + st.KeepaliveIntvl // one probe out, at the next expiry
	if t < st.UserTimeout && st.KeepaliveIntvl > 0 {
		n := (st.UserTimeout - t + st.KeepaliveIntvl - 1) / st.KeepaliveIntvl
		t += n * st.KeepaliveIntvl
	}
	return t
}

func sendingDetection(s *Socket) Detection {
	st := &s.Settings
	switch {
	case st.UserTimeout > 0:
		return Detection{After: st.UserTimeout, By: ByUserTimeout}
	case s.Orphan:
		return Detection{After: tcp.OrphanBudget(st.OrphanRetries, s.RTO, st.RTOMax), By: ByOrphanRetries}
	default:
		return Detection{After: tcp.RetransmitBudget(st.Retries2, st.RTOMax), By: ByRetries2}
	}
}

const (
	tcpListen   = tcp.StateListen
	tcpTimeWait = tcp.StateTimeWait
)
