package wire

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/bpf"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// Kind says which kernel path produced an Event: enum tw_event_kind of
// bpf/record.h, through the constants bpf2go generates from it.
type Kind uint8

const (
	KindState      = Kind(bpf.TcpwatchTwEventKindTW_EV_STATE)      // inet_sock_set_state
	KindRetransmit = Kind(bpf.TcpwatchTwEventKindTW_EV_RETRANSMIT) // tcp_retransmit_skb, or the retransmission timer
	KindSendReset  = Kind(bpf.TcpwatchTwEventKindTW_EV_SEND_RESET) // tcp_send_reset
	KindRecvReset  = Kind(bpf.TcpwatchTwEventKindTW_EV_RECV_RESET) // tcp_receive_reset
	KindError      = Kind(bpf.TcpwatchTwEventKindTW_EV_ERROR)      // inet_sk_error_report
	KindCongState  = Kind(bpf.TcpwatchTwEventKindTW_EV_CONG_STATE) // tcp_cong_state_set
	KindKeepalive  = Kind(bpf.TcpwatchTwEventKindTW_EV_KEEPALIVE)  // tcp_keepalive_timer (timer_expire_entry/exit)
	KindDestroy    = Kind(bpf.TcpwatchTwEventKindTW_EV_DESTROY)    // tcp_destroy_sock
	KindProbe0     = Kind(bpf.TcpwatchTwEventKindTW_EV_PROBE0)     // the zero-window probe timer (tcp_write_timer, ICSK_TIME_PROBE0)
	KindDrop       = Kind(bpf.TcpwatchTwEventKindTW_EV_DROP)       // skb:kfree_skb of a troubled connection's packet
	KindTimeWait   = Kind(bpf.TcpwatchTwEventKindTW_EV_TIMEWAIT)   // skb:kfree_skb of a SYN or RST a TIME_WAIT dropped
	KindLifecycle  = Kind(bpf.TcpwatchTwEventKindTW_EV_LIFECYCLE)  // --all: state changes summarised in the kernel (Event.Life)
	kindUpperBound = Kind(bpf.TcpwatchTwEventKindTW_EV_KIND_MAX)
)

var kindNames = [kindUpperBound]string{
	KindState:      "state",
	KindRetransmit: "retransmit",
	KindSendReset:  "send_reset",
	KindRecvReset:  "receive_reset",
	KindError:      "error",
	KindCongState:  "cong_state",
	KindKeepalive:  "keepalive",
	KindDestroy:    "destroy",
	KindProbe0:     "window_probe",
	KindDrop:       "drop",
	KindTimeWait:   "time_wait",
	KindLifecycle:  "lifecycle",
}

func (k Kind) String() string {
	if k < kindUpperBound && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Flags qualify an Event: enum tw_event_flag of bpf/record.h.
type Flags uint16

const (
	FlagOwnerExiting   = Flags(bpf.TcpwatchTwEventFlagTW_F_OWNER_EXITING)    // the owner was exiting when it closed the socket
	FlagReplyReset     = Flags(bpf.TcpwatchTwEventFlagTW_F_REPLY_RESET)      // the reset answered a received segment
	FlagProbeSent      = Flags(bpf.TcpwatchTwEventFlagTW_F_KA_PROBE)         // keepalive: a probe went out
	FlagKeepaliveKill  = Flags(bpf.TcpwatchTwEventFlagTW_F_KA_KILLED)        // keepalive: the timer gave up and killed the socket
	FlagProbeAnswered  = Flags(bpf.TcpwatchTwEventFlagTW_F_KA_ANSWERED)      // keepalive: the peer answered earlier probes
	FlagInKeepalive    = Flags(bpf.TcpwatchTwEventFlagTW_F_IN_KA_TIMER)      // happened inside tcp_keepalive_timer
	FlagNoSocket       = Flags(bpf.TcpwatchTwEventFlagTW_F_NO_SOCK)          // no full socket: tuple from the packet, no figures
	FlagOrphan         = Flags(bpf.TcpwatchTwEventFlagTW_F_ORPHAN)           // no process holds the socket any more
	FlagFromTimer      = Flags(bpf.TcpwatchTwEventFlagTW_F_FROM_TIMER)       // retransmission seen at the timer, not the tracepoint
	FlagDropIn         = Flags(bpf.TcpwatchTwEventFlagTW_F_DROP_IN)          // drop: a packet from the peer, not one this side sent
	FlagDropElsewhere  = Flags(bpf.TcpwatchTwEventFlagTW_F_DROP_ELSEWHERE)   // drop: in another network namespace of this kernel
	FlagNoLocalPort    = Flags(bpf.TcpwatchTwEventFlagTW_F_NO_LOCAL_PORT)    // connect() found no free local port (EADDRNOTAVAIL)
	FlagCloseWaitStuck = Flags(bpf.TcpwatchTwEventFlagTW_F_CLOSE_WAIT_STUCK) // the socket scan found it stuck in CLOSE_WAIT
	FlagLifeDestroyed  = Flags(bpf.TcpwatchTwEventFlagTW_F_LIFE_DESTROYED)   // lifecycle: sent at the socket's destroy, which it stands for
	// drop: freed by inet6_csk_xmit, whose IPv6 route lookup failed (the kernel's reason: NOT_SPECIFIED)
	FlagDropNoRoute6 = Flags(bpf.TcpwatchTwEventFlagTW_F_DROP_NO_ROUTE6)
)

// NFHook is the netfilter hook of a NETFILTER_DROP, as the kernel half
// inferred it from the packet's state: enum tw_nf_hook of bpf/record.h.
type NFHook uint8

const (
	NFHookNone        = NFHook(bpf.TcpwatchTwNfHookTW_NF_NONE)
	NFHookPrerouting  = NFHook(bpf.TcpwatchTwNfHookTW_NF_PREROUTING)
	NFHookInput       = NFHook(bpf.TcpwatchTwNfHookTW_NF_INPUT)
	NFHookOutput      = NFHook(bpf.TcpwatchTwNfHookTW_NF_OUTPUT)
	NFHookPostrouting = NFHook(bpf.TcpwatchTwNfHookTW_NF_POSTROUTING)
)

func (h NFHook) String() string {
	switch h {
	case NFHookPrerouting:
		return "PREROUTING"
	case NFHookInput:
		return "INPUT"
	case NFHookOutput:
		return "OUTPUT"
	case NFHookPostrouting:
		return "POSTROUTING"
	}
	return ""
}

// OwnerSource says how an owner was learned: enum tw_owner_source of
// bpf/record.h, whose last two values only user space sets.
type OwnerSource uint8

const (
	OwnerUnknown  = OwnerSource(bpf.TcpwatchTwOwnerSourceTW_OWNER_NONE)     // nobody could be named
	OwnerConnect  = OwnerSource(bpf.TcpwatchTwOwnerSourceTW_OWNER_CONNECT)  // the task that called connect()
	OwnerListen   = OwnerSource(bpf.TcpwatchTwOwnerSourceTW_OWNER_LISTEN)   // the task that called listen() (a listening socket)
	OwnerClose    = OwnerSource(bpf.TcpwatchTwOwnerSourceTW_OWNER_CLOSE)    // the task that closed or aborted it
	OwnerProcfs   = OwnerSource(bpf.TcpwatchTwOwnerSourceTW_OWNER_PROCFS)   // the process holding its descriptor (/proc/PID/fd)
	OwnerListener = OwnerSource(bpf.TcpwatchTwOwnerSourceTW_OWNER_LISTENER) // the owner of the listener on its port: the holder could not be found
)

var ownerSourceNames = [...]string{OwnerUnknown: "", OwnerConnect: "connect", OwnerListen: "listen",
	OwnerClose: "close", OwnerProcfs: "procfs", OwnerListener: "listener"}

// String is the source's name in JSON (owner_source): "" when unknown.
func (s OwnerSource) String() string {
	if int(s) < len(ownerSourceNames) {
		return ownerSourceNames[s]
	}
	return fmt.Sprintf("owner_source(%d)", uint8(s))
}

// Event is one decoded kernel record. It holds no pointers to the ring
// buffer and allocates nothing to decode: strings are made only by whoever
// prints it.
type Event struct {
	Mono      time.Duration // kernel CLOCK_MONOTONIC
	Time      time.Time     // wall clock
	Kind      Kind
	Flags     Flags
	Cookie    uint64        // socket cookie, as sock_diag and `ss -e` show it
	FirstSeen time.Duration // CLOCK_MONOTONIC when tcpwatch first saw the socket; 0 unknown
	Local     netip.AddrPort
	Remote    netip.AddrPort
	NetNS     uint32
	Inode     uint32 // the socket's inode ("socket:[N]" in /proc/PID/fd); 0 if it has no file
	PID       uint32 // owning process; 0 unknown
	Owner     OwnerSource
	// CgroupID is the cgroup v2 id of the socket (the cgroup of the task
	// that created it, from sk_cgrp_data, not of the task on the CPU); 0
	// when the kernel has none. On cgroup v2 it is the inode of the
	// cgroup's directory.
	CgroupID uint64
	comm     [16]byte
	thread   [16]byte

	State    tcp.State // for KindState, the new state
	OldState tcp.State // KindState only
	CAState  tcp.CAState
	OldCA    tcp.CAState // KindCongState only

	Retransmits   uint8 // icsk_retransmits: consecutive RTO retransmissions
	Backoff       uint8 // icsk_backoff: RTO doublings
	ProbesOut     uint8 // icsk_probes_out: unanswered keepalive/window probes
	SkErr         int32
	SkErrSoft     int32
	Detail        int32 // reset reason, reported errno, retransmit error, syscall error
	ExitCode      uint32
	RTO           time.Duration
	RTOMax        time.Duration
	SRTT          time.Duration
	PacketsOut    uint32
	RetransOut    uint32
	BytesInFlight uint32
	TotalRetrans  uint32
	AckAge        time.Duration // since the peer last acknowledged anything
	SndWnd        uint32        // the window the peer last advertised, bytes
	NotSent       uint32        // bytes the application wrote that are not sent yet
	// Drops (KindDrop): how many packets this record stands for; the
	// reason is Detail (enum skb_drop_reason), the hook NFHook.
	Drops  uint32
	NFHook NFHook
	// ProbesBefore (KindProbe0): icsk_probes_out when the timer fired.
	ProbesBefore uint8
	// TimeWait (KindTimeWait): the segment and the TIME_WAIT it met.
	TimeWait TimeWaitFacts

	Settings tcp.Settings

	// Life (KindLifecycle): the state changes the record summarises.
	Life Life
}

// LifeSteps is how many state changes one lifecycle record holds.
const LifeSteps = len(bpf.TcpwatchLifecycle{}.AtNs)

// Life is what a lifecycle record (KindLifecycle) adds to the figures:
// the socket's state changes, in order, that the kernel half kept instead
// of sending a record for each (bpf/lifecycle.h).
type Life struct {
	Steps int
	Step  [LifeSteps]LifeStep
}

// LifeStep is one state change of a lifecycle record.
type LifeStep struct {
	Mono       time.Duration // kernel CLOCK_MONOTONIC
	Old, State tcp.State
}

// Comm is the owning process's name as the kernel had it; it may hold any
// bytes, so printers must sanitise it.
func (e *Event) Comm() string { return cString(&e.comm) }

// cString is a kernel name up to its NUL: what follows it may be the
// bytes of an earlier, longer name (bpf_probe_read_kernel_str writes no
// padding).
func cString(b *[16]byte) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	return string(b[:n])
}

// SetComm is for building events outside the kernel (tests, replays).
func (e *Event) SetComm(s string) {
	e.comm = [16]byte{}
	copy(e.comm[:15], s)
}

// Thread is the name of the owner's thread that acted (connect, listen,
// close) when it differs from the process's, Comm: redis-server's
// bio_aof_fsync closing the files of a killed redis-server. "" when the
// thread-group leader acted, its thread has the process's name, or the
// kernel did not say (a record from before the field, or no owner).
func (e *Event) Thread() string {
	if e.thread == e.comm || e.thread[0] == 0 {
		return "" // the same bytes, or none: no name to compare (a step of every record)
	}
	if t := cString(&e.thread); t != e.Comm() {
		return t
	}
	return ""
}

// SetThread is for building events outside the kernel (tests, replays).
func (e *Event) SetThread(s string) {
	e.thread = [16]byte{}
	copy(e.thread[:15], s)
}

// ExitSignal returns the signal that killed the owner, or 0 if it exited.
func (e *Event) ExitSignal() int { return tcp.ExitSignal(e.ExitCode) }

// ExitStatus returns the owner's exit status when it exited normally.
func (e *Event) ExitStatus() int { return tcp.ExitStatus(e.ExitCode) }

// ErrRecordSize is returned for a record whose length is not an event's.
var ErrRecordSize = errors.New("ring buffer record has the wrong size")

// recordSize is the size of struct event; the generated type is its Go twin.
const recordSize = int(unsafe.Sizeof(bpf.TcpwatchEvent{}))

// Clock turns kernel CLOCK_MONOTONIC stamps into wall-clock time.
type Clock struct {
	wallAtZero time.Time
}

// NewClock anchors the kernel's monotonic clock to the wall clock now.
func NewClock(monoNow time.Duration, wallNow time.Time) Clock {
	return Clock{wallAtZero: wallNow.Add(-monoNow)}
}

// Wall converts a CLOCK_MONOTONIC stamp.
func (c Clock) Wall(mono time.Duration) time.Time { return c.wallAtZero.Add(mono) }

// Decode fills ev from one ring-buffer record. It checks the length, then
// reads the record in place: no reflection, no allocation.
func Decode(raw []byte, clock Clock, ev *Event) error {
	if len(raw) == recordSizeBeforeWindow || len(raw) == recordSizeBeforeThread {
		// A recording made before the record grew (issues 19, 17): its
		// later fields are zero. The ring never holds one.
		var full [recordSize]byte
		copy(full[:], raw)
		raw = full[:]
	}
	if len(raw) < recordSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrRecordSize, len(raw), recordSize)
	}
	if raw[kindOffset] == byte(KindLifecycle) && len(raw) < lifecycleSize {
		return fmt.Errorf("%w: a lifecycle of %d bytes, want %d", ErrRecordSize, len(raw), lifecycleSize)
	}
	r := (*bpf.TcpwatchEvent)(unsafe.Pointer(&raw[0]))
	*ev = Event{
		Mono:      time.Duration(r.TsNs),
		Kind:      Kind(r.Kind),
		Flags:     Flags(r.Flags),
		Cookie:    r.Cookie,
		FirstSeen: time.Duration(r.FirstSeenNs),
		NetNS:     r.Netns,
		Inode:     r.Inode,
		PID:       r.Pid,
		Owner:     OwnerSource(r.OwnerSource),
		CgroupID:  r.CgroupId,
		comm:      r.Comm,
		thread:    r.Thread,

		State:    tcp.State(r.State),
		CAState:  tcp.CAState(r.CaState),
		OldState: tcp.State(r.OldState),

		Retransmits:   r.Retransmits,
		Backoff:       r.Backoff,
		ProbesOut:     r.ProbesOut,
		SkErr:         r.SkErr,
		SkErrSoft:     r.SkErrSoft,
		Detail:        r.Detail,
		ExitCode:      r.ExitCode,
		RTO:           time.Duration(r.RtoMs) * time.Millisecond,
		RTOMax:        time.Duration(r.RtoMaxMs) * time.Millisecond,
		SRTT:          time.Duration(r.SrttUs) * time.Microsecond,
		PacketsOut:    r.PacketsOut,
		RetransOut:    r.RetransOut,
		BytesInFlight: r.BytesInFlight,
		TotalRetrans:  r.TotalRetrans,
		AckAge:        time.Duration(r.AckAgeMs) * time.Millisecond,
		SndWnd:        r.SndWnd,
		NotSent:       r.NotsentBytes,
		Drops:         r.Drops,
		NFHook:        NFHook(r.NfHook),

		Settings: tcp.Settings{
			Retries2:          r.Retries2,
			SynRetries:        r.SynRetries,
			SynLinearTimeouts: r.SynLinearTimeouts,
			OrphanRetries:     r.OrphanRetries,
			KeepaliveOn:       r.KeepaliveOn != 0,
			KeepaliveTime:     time.Duration(r.KeepaliveTimeMs) * time.Millisecond,
			KeepaliveIntvl:    time.Duration(r.KeepaliveIntvlMs) * time.Millisecond,
			KeepaliveProbes:   r.KeepaliveProbes,
			UserTimeout:       time.Duration(r.UserTimeoutMs) * time.Millisecond,
		},
	}
	ev.Time = clock.Wall(ev.Mono)
	switch ev.Kind {
	case KindLifecycle:
		decodeLife((*bpf.TcpwatchLifecycle)(unsafe.Pointer(&raw[0])), &ev.Life)
	case KindCongState:
		// The record reuses old_state for the previous congestion state.
		ev.OldCA, ev.OldState = tcp.CAState(r.OldState), 0
	case KindProbe0:
		// ... and, for the probe timer, for icsk_probes_out at its entry.
		ev.ProbesBefore, ev.OldState = r.OldState, 0
	case KindTimeWait:
		decodeTimeWait(r, ev)
	}
	if r.Family == unix.AF_INET6 {
		ev.Local = netip.AddrPortFrom(netip.AddrFrom16(r.Saddr), r.Sport)
		ev.Remote = netip.AddrPortFrom(netip.AddrFrom16(r.Daddr), r.Dport)
	} else {
		ev.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.Saddr[:4])), r.Sport)
		ev.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte(r.Daddr[:4])), r.Dport)
	}
	return nil
}

// Encode is Decode's inverse, for tests and recorded scenarios: it builds
// the bytes the kernel would have sent for ev.
func Encode(ev *Event) []byte {
	r := bpf.TcpwatchEvent{
		TsNs:              uint64(ev.Mono),
		Cookie:            ev.Cookie,
		FirstSeenNs:       uint64(ev.FirstSeen),
		Netns:             ev.NetNS,
		Inode:             ev.Inode,
		Pid:               ev.PID,
		OwnerSource:       uint8(ev.Owner),
		Comm:              ev.comm,
		Thread:            ev.thread,
		Sport:             ev.Local.Port(),
		Dport:             ev.Remote.Port(),
		Kind:              uint8(ev.Kind),
		State:             uint8(ev.State),
		OldState:          uint8(ev.OldState),
		CaState:           uint8(ev.CAState),
		Retransmits:       ev.Retransmits,
		Backoff:           ev.Backoff,
		ProbesOut:         ev.ProbesOut,
		KeepaliveProbes:   ev.Settings.KeepaliveProbes,
		Retries2:          ev.Settings.Retries2,
		SynRetries:        ev.Settings.SynRetries,
		SynLinearTimeouts: ev.Settings.SynLinearTimeouts,
		OrphanRetries:     ev.Settings.OrphanRetries,
		Flags:             uint16(ev.Flags),
		SkErr:             ev.SkErr,
		SkErrSoft:         ev.SkErrSoft,
		Detail:            ev.Detail,
		ExitCode:          ev.ExitCode,
		RtoMs:             uint32(ev.RTO / time.Millisecond),
		RtoMaxMs:          uint32(ev.RTOMax / time.Millisecond),
		SrttUs:            uint32(ev.SRTT / time.Microsecond),
		PacketsOut:        ev.PacketsOut,
		RetransOut:        ev.RetransOut,
		BytesInFlight:     ev.BytesInFlight,
		TotalRetrans:      ev.TotalRetrans,
		KeepaliveTimeMs:   uint32(ev.Settings.KeepaliveTime / time.Millisecond),
		KeepaliveIntvlMs:  uint32(ev.Settings.KeepaliveIntvl / time.Millisecond),
		UserTimeoutMs:     uint32(ev.Settings.UserTimeout / time.Millisecond),
		AckAgeMs:          uint32(ev.AckAge / time.Millisecond),
		CgroupId:          ev.CgroupID,
		SndWnd:            ev.SndWnd,
		NotsentBytes:      ev.NotSent,
		Drops:             ev.Drops,
		NfHook:            uint8(ev.NFHook),
	}
	if ev.Settings.KeepaliveOn {
		r.KeepaliveOn = 1
	}
	switch ev.Kind {
	case KindCongState:
		r.OldState = uint8(ev.OldCA)
	case KindProbe0:
		r.OldState = ev.ProbesBefore
	case KindTimeWait:
		encodeTimeWait(ev, &r)
	}
	// Either side IPv6 makes an IPv6 record; a side with no address (a
	// test's event, a reset with no socket) is all zeros, never a panic.
	if la, ra := ev.Local.Addr(), ev.Remote.Addr(); la.Is6() || ra.Is6() {
		r.Family = unix.AF_INET6
		r.Saddr, r.Daddr = la.As16(), ra.As16()
	} else {
		r.Family = unix.AF_INET
		if la.Is4() {
			s := la.As4()
			copy(r.Saddr[:], s[:])
		}
		if ra.Is4() {
			d := ra.As4()
			copy(r.Daddr[:], d[:])
		}
	}
	if ev.Kind == KindLifecycle {
		buf := make([]byte, lifecycleSize)
		l := (*bpf.TcpwatchLifecycle)(unsafe.Pointer(&buf[0]))
		l.E = r
		encodeLife(&ev.Life, l)
		return buf
	}
	buf := make([]byte, recordSize)
	*(*bpf.TcpwatchEvent)(unsafe.Pointer(&buf[0])) = r
	return buf
}

// lifecycleSize is the size of struct lifecycle: an event and its steps.
const lifecycleSize = int(unsafe.Sizeof(bpf.TcpwatchLifecycle{}))

// kindOffset is where an event's kind is, to tell a lifecycle's length.
const kindOffset = int(unsafe.Offsetof(bpf.TcpwatchEvent{}.Kind))

func decodeLife(l *bpf.TcpwatchLifecycle, life *Life) {
	life.Steps = min(int(l.Steps), LifeSteps)
	for i := range life.Steps {
		life.Step[i] = LifeStep{Mono: time.Duration(l.AtNs[i]), Old: tcp.State(l.OldState[i]), State: tcp.State(l.NewState[i])}
	}
}

func encodeLife(life *Life, l *bpf.TcpwatchLifecycle) {
	l.Steps = uint8(min(life.Steps, LifeSteps))
	for i := range int(l.Steps) {
		s := life.Step[i]
		l.AtNs[i], l.OldState[i], l.NewState[i] = uint64(s.Mono), uint8(s.Old), uint8(s.State)
	}
}
