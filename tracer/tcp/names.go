package tcp

import (
	"fmt"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/bpf"
)

// State is a TCP state as the kernel numbers it (include/net/tcp_states.h).
type State uint8

const (
	StateEstablished State = 1
	StateSynSent     State = 2
	StateSynRecv     State = 3
	StateFinWait1    State = 4
	StateFinWait2    State = 5
	StateTimeWait    State = 6
	StateClose       State = 7
	StateCloseWait   State = 8
	StateLastAck     State = 9
	StateListen      State = 10
	StateClosing     State = 11
	StateNewSynRecv  State = 12
)

var stateNames = [...]string{
	StateEstablished: "ESTABLISHED",
	StateSynSent:     "SYN_SENT",
	StateSynRecv:     "SYN_RECV",
	StateFinWait1:    "FIN_WAIT1",
	StateFinWait2:    "FIN_WAIT2",
	StateTimeWait:    "TIME_WAIT",
	StateClose:       "CLOSE",
	StateCloseWait:   "CLOSE_WAIT",
	StateLastAck:     "LAST_ACK",
	StateListen:      "LISTEN",
	StateClosing:     "CLOSING",
	StateNewSynRecv:  "NEW_SYN_RECV",
}

func (s State) String() string {
	if int(s) < len(stateNames) && stateNames[s] != "" {
		return stateNames[s]
	}
	return fmt.Sprintf("STATE(%d)", uint8(s))
}

// CAState is the congestion-avoidance state (enum tcp_ca_state).
type CAState uint8

const (
	CAOpen     CAState = 0
	CADisorder CAState = 1
	CACWR      CAState = 2
	CARecovery CAState = 3
	CALoss     CAState = 4
)

var caNames = [...]string{"Open", "Disorder", "CWR", "Recovery", "Loss"}

func (c CAState) String() string {
	if int(c) < len(caNames) {
		return caNames[c]
	}
	return fmt.Sprintf("CA(%d)", uint8(c))
}

// ErrnoName returns the symbolic name of a positive or negative errno
// ("ETIMEDOUT"), or "" for 0.
func ErrnoName(e int32) string {
	if e < 0 {
		e = -e
	}
	if e == 0 {
		return ""
	}
	if name := unix.ErrnoName(syscall.Errno(e)); name != "" {
		return name
	}
	return fmt.Sprintf("errno %d", e)
}

// ErrnoText returns the C library's text for an errno ("Connection timed out").
func ErrnoText(e int32) string {
	if e < 0 {
		e = -e
	}
	if e == 0 {
		return ""
	}
	return syscall.Errno(e).Error()
}

// ResetReasons names the kernel's enum sk_rst_reason. The enum is not UAPI
// and changes between kernels, so the names come from the running kernel's
// BTF; the fallback is the 6.18 table.
type ResetReasons map[int32]string

// FallbackResetReasons is the 6.18 table, for kernels whose BTF has no enum sk_rst_reason.
var FallbackResetReasons = ResetReasons{
	0: "NOT_SPECIFIED", 1: "NO_SOCKET", 2: "TCP_INVALID_ACK_SEQUENCE", 3: "TCP_RFC7323_PAWS",
	4: "TCP_TOO_OLD_ACK", 5: "TCP_ACK_UNSENT_DATA", 6: "TCP_FLAGS", 7: "TCP_OLD_ACK",
	8: "TCP_ABORT_ON_DATA", 9: "TCP_TIMEWAIT_SOCKET", 10: "INVALID_SYN", 11: "TCP_ABORT_ON_CLOSE",
	12: "TCP_ABORT_ON_LINGER", 13: "TCP_ABORT_ON_MEMORY", 14: "TCP_STATE", 15: "TCP_KEEPALIVE_TIMEOUT",
	16: "TCP_DISCONNECT_WITH_DATA",
}

// Name returns the reason's name without the SK_RST_REASON_ prefix, or ""
// when the kernel gave none.
func (r ResetReasons) Name(reason int32) string {
	if reason == RSTReasonUnknown {
		return ""
	}
	if n, ok := r[reason]; ok {
		return n
	}
	return fmt.Sprintf("REASON_%d", reason)
}

// TrimReasonPrefix drops the enum's SK_RST_REASON_ prefix.
func TrimReasonPrefix(s string) string { return strings.TrimPrefix(s, "SK_RST_REASON_") }

// RSTReasonUnknown is the reason of a send_reset on kernels before 6.10,
// which do not say why they reset: record.h's TW_RST_REASON_UNKNOWN (-1).
// BTF from clang 14 carries no enum signedness, so bpf2go makes the enum
// unsigned and -1 arrives as 2^32-1: it is turned back here.
const RSTReasonUnknown = int32(int64(bpf.TcpwatchTwRstReasonTW_RST_REASON_UNKNOWN) - 1<<32)

// KernelInternalErrno says whether e is one of the kernel's own codes
// (ERESTARTSYS and its kin, 512 and up) that never reach an application:
// the system call is restarted or fails with EINTR instead.
func KernelInternalErrno(e int32) bool {
	if e < 0 {
		e = -e
	}
	return e >= 512
}

// Unreachable says whether e is a routing failure the kernel reports for an
// unreachable peer: EHOSTUNREACH (ICMP host unreachable, neighbour lookup
// failed) or ENETUNREACH (no route).
func Unreachable(e int32) bool {
	if e < 0 {
		e = -e
	}
	return syscall.Errno(e) == unix.EHOSTUNREACH || syscall.Errno(e) == unix.ENETUNREACH
}

// ExitSignal is the signal that killed a task, from its exit_code (the
// encoding wait(2) uses); 0 if it exited.
func ExitSignal(exitCode uint32) int {
	ws := syscall.WaitStatus(exitCode)
	if !ws.Signaled() {
		return 0
	}
	return int(ws.Signal())
}

// ExitStatus is a task's exit status when it exited on its own.
func ExitStatus(exitCode uint32) int {
	ws := syscall.WaitStatus(exitCode)
	if !ws.Exited() {
		return 0
	}
	return ws.ExitStatus()
}
