// Package words says, in sentences, what the tracker's facts mean: a
// one-line summary for the person on call, an explanation that teaches
// what the kernel did and which figures decided it, and the timeline's
// steps. Every sentence cites the kernel's own figures; nothing here
// decides a verdict. The verdicts' words live in the verdict registry
// (registry.go), one file per family.
package words

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// BudgetText says which setting decides when the kernel gives up, and the
// time it allows.
func BudgetText(n *tracker.Narrative) string {
	b := n.Budget
	switch b.Setting {
	case "TCP_USER_TIMEOUT":
		return fmt.Sprintf("TCP_USER_TIMEOUT=%s replaces the tcp_retries2 budget", Secs(b.Limit))
	case "tcp_orphan_retries":
		v := strconv.Itoa(b.Value)
		if b.Value == 0 {
			v = "0 (taken as 8)"
		}
		return fmt.Sprintf("the socket is orphaned, so tcp_orphan_retries=%s applies instead of tcp_retries2: %s from the first retransmission (tcp_model_timeout: %s)",
			v, Secs(b.Limit), formula(uint8(max(b.Value, 8*boolInt(b.Value == 0))), tcp.RTOMin, n.RTOMax))
	case "tcp_syn_retries":
		return fmt.Sprintf("tcp_syn_retries=%d allows %s of SYN retransmissions (tcp_model_timeout: %s)",
			b.Value, Secs(b.Limit), formula(uint8(b.Value), tcp.TimeoutInit, n.RTOMax))
	}
	return fmt.Sprintf("tcp_retries2=%d allows %s from the first retransmission (tcp_model_timeout: %s)",
		b.Value, Secs(b.Limit), formula(uint8(b.Value), tcp.RTOMin, n.RTOMax))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func formula(boundary uint8, base, rtoMax time.Duration) string {
	low, high, cap := tcp.ModelTimeoutFormula(boundary, base, rtoMax)
	if high == 0 {
		return fmt.Sprintf("%d × %s", low, Secs(base))
	}
	return fmt.Sprintf("%d × %s + %d × %s", low, Secs(base), high, Secs(cap))
}

// transitions holds "OLD -> NEW" for every pair of the kernel's states:
// most steps of a timeline are one, and --all renders several per
// connection.
var transitions = func() (t [tcp.StateNewSynRecv + 1][tcp.StateNewSynRecv + 1]string) {
	for o := range t {
		for n := range t[o] {
			t[o][n] = tcp.State(o).String() + " -> " + tcp.State(n).String()
		}
	}
	return t
}()

func transition(old, state tcp.State) string {
	if int(old) < len(transitions) && int(state) < len(transitions) {
		return transitions[old][state]
	}
	return old.String() + " -> " + state.String()
}

// Step is one line of a timeline.
func Step(s *tracker.Step) string {
	switch {
	case s.Existing:
		return "found at start-up in " + s.State.String()
	}
	switch s.Kind {
	case wire.KindState:
		return transition(s.Old, s.State)
	case wire.KindRetransmit:
		kind := "retransmission"
		switch {
		case s.State == tcp.StateSynSent:
			kind = "SYN retransmission"
		case s.CA == tcp.CALoss || s.Flags&wire.FlagFromTimer != 0:
			kind = "RTO retransmission"
		case s.CA == tcp.CARecovery:
			kind = "fast retransmission"
		}
		txt := kind + " #" + strconv.Itoa(int(s.Retransmits)) + " (rto " + Secs(s.RTO) + ")"
		if s.Detail != 0 {
			txt += " failed: " + tcp.ErrnoName(s.Detail)
		} else if s.Resent {
			txt += " held on this host, sent after the timer: the timer restarted"
		} else if s.Flags&wire.FlagFromTimer != 0 {
			txt += " seen at the timer: it did not leave this host"
		}
		return txt
	case wire.KindSendReset:
		who := "sent RST"
		if s.Flags&wire.FlagReplyReset != 0 {
			who = "sent RST in reply"
		}
		if s.ResetReason != "" {
			return who + " (" + s.ResetReason + ")"
		}
		return who
	case wire.KindRecvReset:
		return "received RST in " + s.State.String()
	case wire.KindError:
		return "error reported: " + tcp.ErrnoName(s.Detail)
	case wire.KindCongState:
		return "congestion state " + s.OldCA.String() + " -> " + s.CA.String()
	case wire.KindKeepalive:
		switch {
		case s.Flags&wire.FlagKeepaliveKill != 0:
			return "keepalive timer gave up after " + strconv.Itoa(int(s.Probes)) + " probes"
		case s.Flags&wire.FlagProbeSent != 0:
			return "keepalive probe " + strconv.Itoa(int(s.Probes)) + " sent"
		}
		return "keepalive probe answered"
	case wire.KindDestroy:
		return "socket destroyed"
	case wire.KindProbe0:
		if s.Probes == 0 {
			return "window probing over: the data left"
		}
		return "window probe sent, icsk_probes_out=" + strconv.Itoa(int(s.Probes)) + " (interval base " + Secs(s.RTO) + ")"
	}
	return s.Kind.String()
}

// RTOList prints RTOs as "204ms → 408ms → 816ms", eliding the middle of long lists.
func RTOList(rtos []time.Duration) string {
	if len(rtos) == 0 {
		return "unknown"
	}
	parts := make([]string, 0, len(rtos))
	for i, r := range rtos {
		if len(rtos) > 8 && i >= 3 && i < len(rtos)-3 {
			if i == 3 {
				parts = append(parts, "…")
			}
			continue
		}
		parts = append(parts, Secs(r))
	}
	return strings.Join(parts, " → ")
}

// Secs prints a duration the way kernel documentation does: 200ms, 1.6s, 924.6s.
func Secs(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + Secs(-d)
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	default:
		return strconv.FormatFloat(float64(d.Milliseconds())/1000, 'f', -1, 64) + "s"
	}
}

// Errno prints an errno as "ETIMEDOUT (110, connection timed out)".
func Errno(e int32) string {
	if e == 0 {
		return "no error reported"
	}
	return fmt.Sprintf("%s (%d, %s)", tcp.ErrnoName(e), e, tcp.ErrnoText(e))
}

// SignalName names a signal number ("SIGKILL").
func SignalName(sig int) string {
	if name := unixSignalName(sig); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", sig)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func capital(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
