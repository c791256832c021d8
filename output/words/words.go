// Package words says, in sentences, what the tracker's facts mean: a
// one-line summary for the person on call, an explanation that teaches
// what the kernel did and which figures decided it, and the timeline's
// steps. Every sentence cites the kernel's own figures; nothing here
// decides a verdict.
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

// Summary is the narrative in one sentence.
func Summary(n *tracker.Narrative) string {
	switch n.Verdict {
	case tracker.Stalled:
		return fmt.Sprintf("the peer has stopped acknowledging: %d RTO retransmission%s, no ACK for %s; the kernel gives up in about %s",
			n.Retransmits, plural(n.Retransmits), Secs(n.Outage), Secs(n.GiveUpIn))
	case tracker.Recovered:
		if n.Probes > 0 && n.Retransmits == 0 {
			return fmt.Sprintf("the idle peer answered a keepalive probe after %d unanswered; the connection is alive", n.Probes)
		}
		return fmt.Sprintf("the peer answered again after a %s outage that cost %d RTO retransmission%s; the application saw only a delay",
			Secs(n.Outage), n.Retransmits, plural(n.Retransmits))
	case tracker.KeepaliveProbing:
		return fmt.Sprintf("keepalive probe %d of %d sent, the previous one went unanswered: the idle peer has been silent for %s; the kernel gives up in about %s",
			n.Probes, n.Settings.KeepaliveProbes, Secs(n.Outage), Secs(n.GiveUpIn))
	case tracker.KeepaliveTimeout:
		return fmt.Sprintf("the idle peer answered none of %d keepalive probes: the kernel reset the connection after %s of silence (%s)",
			n.Probes, Secs(n.Outage), Errno(n.Errno))
	case tracker.RetransmitTimeout:
		if n.Connecting {
			return connectTimeoutSummary(n)
		}
		return fmt.Sprintf("the peer stopped acknowledging and the kernel gave up after %d retransmission%s over %s: %s",
			n.Retransmits, plural(n.Retransmits), Secs(n.Outage), Errno(n.Errno))
	case tracker.HostUnreachable:
		if n.Connecting {
			return fmt.Sprintf("connect() to %s failed: the host is unreachable after %d SYN retransmission%s over %s (%s)",
				n.Remote, n.Retransmits, plural(n.Retransmits), Secs(n.Outage), Errno(n.Errno))
		}
		return fmt.Sprintf("the peer is unreachable: after %d retransmission%s over %s the kernel gave up with %s",
			n.Retransmits, plural(n.Retransmits), Secs(n.Outage), Errno(n.Errno))
	case tracker.PeerLostState:
		what := fmt.Sprintf("%d retransmission%s", n.Retransmits, plural(n.Retransmits))
		if n.Retransmits == 0 {
			what = fmt.Sprintf("keepalive probe %d", n.Probes)
		}
		return fmt.Sprintf("the peer answered %s with RST after %s of silence: its host rebooted or lost the connection (%s)",
			what, Secs(n.Outage), Errno(n.Errno))
	case tracker.PeerReset:
		return fmt.Sprintf("the peer reset the connection (RST) while it was answering normally: %s", Errno(n.Errno))
	case tracker.PeerClosed:
		if n.ResetState != 0 {
			return "the peer closed the connection (FIN), then reset it: its process closed the socket or died"
		}
		return "the peer closed the connection (FIN)"
	case tracker.LocalClosed:
		return "this side closed the connection normally"
	case tracker.LocalProcessExited:
		how := fmt.Sprintf("exited with status %d", n.ExitStatus)
		if n.ExitSignal != 0 {
			how = "was killed by " + SignalName(n.ExitSignal)
		}
		pkt := "FIN"
		if n.SentReset {
			pkt = "RST (" + orUnknown(n.ResetReason) + ")"
		}
		s := fmt.Sprintf("the owning process %s (pid %d) %s with the connection open; its kernel closed it with %s",
			orUnknown(n.Owner.Comm), n.Owner.PID, how, pkt)
		if n.Retransmits > 0 {
			s += fmt.Sprintf(", %s into an outage (%d RTO retransmission%s unanswered)", Secs(n.Outage), n.Retransmits, plural(n.Retransmits))
		}
		return s
	case tracker.LocalAbort:
		s := fmt.Sprintf("this side aborted the connection with RST (%s)", orUnknown(n.ResetReason))
		if n.Errno != 0 {
			s += ": " + Errno(n.Errno)
		}
		return s
	case tracker.ConnectRefused:
		return fmt.Sprintf("connect() to %s was refused: the peer answered SYN with RST (%s)", n.Remote, Errno(n.Errno))
	case tracker.ConnectTimeout:
		return connectTimeoutSummary(n)
	case tracker.Untold:
		return untoldSummary(n)
	case tracker.CloseWaitStuck:
		return closeWaitSummary(n)
	case tracker.LocalPortsExhausted:
		return portsSummary(n)
	}
	return string(n.Verdict)
}

func connectTimeoutSummary(n *tracker.Narrative) string {
	return fmt.Sprintf("connect() to %s timed out: %d SYN retransmission%s unanswered over %s (%s)",
		n.Remote, n.Retransmits, plural(n.Retransmits), Secs(n.Outage), Errno(n.Errno))
}

// Explanation teaches what the kernel did and why, with its figures.
func Explanation(n *tracker.Narrative) string {
	// The normal ends are most of what --all tells, one per connection
	// end under churn: their words are fixed, so no building.
	if e := normalExplanation(n); e != "" && !n.LostRecords {
		return e
	}
	var b strings.Builder
	explain(&b, n)
	if n.LostRecords {
		b.WriteString(" Some kernel records were lost while tcpwatch tracked this connection (see stats.lost): its timeline may have gaps.")
	}
	return b.String()
}

const (
	peerClosedExplanation  = "ESTABLISHED -> CLOSE_WAIT: a FIN arrived, and read() returns 0 (end of file). A peer process that exited or crashed with an empty receive buffer sends exactly the same FIN."
	peerResetAfterFIN      = " The RST that followed (the peer refusing data sent after its FIN, reason TCP_ABORT_ON_DATA on its side) means its socket is closed: reads still return 0, a write fails with EPIPE."
	localClosedExplanation = "close() or shutdown() sent FIN (ESTABLISHED -> FIN_WAIT1); the peer acknowledged and closed its side."
)

// normalExplanation explains a normal end (local_closed, peer_closed); ""
// for any other verdict.
func normalExplanation(n *tracker.Narrative) string {
	switch n.Verdict {
	case tracker.PeerClosed:
		if n.ResetState != 0 {
			return peerClosedExplanation + peerResetAfterFIN
		}
		return peerClosedExplanation
	case tracker.LocalClosed:
		return localClosedExplanation
	}
	return ""
}

func explain(b *strings.Builder, n *tracker.Narrative) {
	s := n.Settings
	budget := BudgetText(n)
	app := "the application"
	if n.Orphan {
		app = "no application (it had already closed the socket)"
	}
	switch n.Verdict {
	case tracker.Stalled:
		fmt.Fprintf(b, "The retransmission timer fired %d time%s with nothing acknowledged (RTOs %s); %s. The budget: %s. The kernel checks it only when the RTO fires, so it will kill the connection at the first expiry past it, about %s from now",
			n.Retransmits, plural(n.Retransmits), RTOList(n.RTOs), backoffText(n), budget, Secs(n.GiveUpIn))
		if n.Orphan {
			b.WriteString("; no application holds the socket any more, so nobody will see the error.")
		} else {
			fmt.Fprintf(b, ", and the application will then get %s.", expectedTimeoutErrno(n))
		}
		failedSends(b, n)

	case tracker.Recovered:
		if n.Probes > 0 && n.Retransmits == 0 {
			fmt.Fprintf(b, "Any ACK resets icsk_probes_out to 0 and re-arms the keepalive timer (%s).", keepaliveText(s))
			return
		}
		fmt.Fprintf(b, "The congestion state went from Loss back to %s when a retransmission was acknowledged. The outage (%s, RTOs %s) ended inside the budget (%s), so the connection survived.",
			n.CAState, Secs(n.Outage), RTOList(n.RTOs), budget)

	case tracker.KeepaliveProbing:
		fmt.Fprintf(b, "SO_KEEPALIVE is on: %s. icsk_probes_out=%d; when it reaches %d and the next interval passes with no answer, the kernel sends RST (TCP_KEEPALIVE_TIMEOUT) and %s gets ETIMEDOUT. Any ACK from the peer resets the count.",
			keepaliveText(s), n.Probes, s.KeepaliveProbes, app)

	case tracker.KeepaliveTimeout:
		fmt.Fprintf(b, "SO_KEEPALIVE: %s. With no answer to probe %d the kernel sent RST (reason %s) and reported %s to %s: the peer host is down, unreachable, or a middlebox dropped the connection. A peer that had rebooted would have answered with RST (peer_lost_state).",
			keepaliveText(s), n.Probes, orUnknown(n.ResetReason), Errno(n.Errno), app)

	case tracker.RetransmitTimeout, tracker.ConnectTimeout:
		if n.Connecting {
			fmt.Fprintf(b, "No SYN-ACK and no RST came back: a black hole (host down, route missing, firewall dropping). The SYN RTO starts at 1 s%s and doubles; %s, after which connect() fails with %s.",
				linearText(s), budget, Errno(n.Errno))
			return
		}
		fmt.Fprintf(b, "The budget: %s; the RTOs were %s. When the budget ran out at an RTO expiry, tcp_write_timeout() killed the connection with sk_err=%s for %s. Nothing came back, not even an ICMP error: the peer host died, the cable or path is down, or a firewall drops the traffic.",
			budget, RTOList(n.RTOs), Errno(n.Errno), app)
		failedSends(b, n)

	case tracker.HostUnreachable:
		if n.Connecting {
			fmt.Fprintf(b, "connect() sent SYNs that could not be delivered: the neighbour (ARP/ND) lookup for the next hop failed or a router answered ICMP unreachable, so the kernel reported %s. %s.",
				Errno(n.Errno), budget)
			return
		}
		fmt.Fprintf(b, "The route to the peer failed while it was unacknowledged: a router's ICMP host/net unreachable or a failed ARP/neighbour lookup is a soft error for an established connection (sk_err_soft=%s); RTOs %s (%s). When the budget ran out (%s) the soft error became the error %s sees: %s.",
			orUnknown(tcp.ErrnoName(n.SkErrSoft)), RTOList(n.RTOs), backoffText(n), budget, app, Errno(n.Errno))
		failedSends(b, n)

	case tracker.PeerLostState:
		what := fmt.Sprintf("our retransmissions (RTOs %s)", RTOList(n.RTOs))
		if n.Retransmits == 0 {
			what = fmt.Sprintf("keepalive probe %d (the connection was idle, so only the keepalive timer spoke)", n.Probes)
		}
		fmt.Fprintf(b, "A RST arrived in %s answering %s: the peer's kernel has no socket for this 4-tuple (reason NO_SOCKET on its side). That is what a host that crashed and rebooted does, or a NAT/firewall that forgot the flow. %s gets %s.",
			n.ResetState, what, capital(app), Errno(n.Errno))

	case tracker.PeerReset:
		fmt.Fprintf(b, "tcp_receive_reset in %s with the peer acknowledging normally: its application aborted the connection (closed it with unread data, SO_LINGER 0, or died with unread data: RST reason TCP_ABORT_ON_CLOSE on its side), or its kernel rejected our segment. %s gets %s (EPIPE on a write after the reset).",
			n.ResetState, capital(app), Errno(n.Errno))

	case tracker.PeerClosed, tracker.LocalClosed:
		b.WriteString(normalExplanation(n))

	case tracker.LocalProcessExited:
		peer := "a normal close (peer_closed)"
		if n.SentReset {
			peer = "a reset (peer_reset)"
		}
		fmt.Fprintf(b, "When a process dies its kernel closes its sockets (do_exit -> exit_files, the task has PF_EXITING): FIN if the receive buffer was empty, RST with reason TCP_ABORT_ON_CLOSE if unread data was thrown away. The peer sees %s; the connection dies with the process, not with the host.", peer)
		if n.Retransmits > 0 {
			fmt.Fprintf(b, " An outage was in progress (RTOs %s; %s): the socket lives on as an orphan until that budget runs out.", RTOList(n.RTOs), budget)
		}

	case tracker.LocalAbort:
		b.WriteString(abortExplanation(n.ResetReason))
		b.WriteString(" The peer gets ECONNRESET.")

	case tracker.Untold:
		b.WriteString(untoldExplanation)
	case tracker.CloseWaitStuck:
		b.WriteString(closeWaitExplanation)
	case tracker.LocalPortsExhausted:
		b.WriteString(portsExplanation)
	case tracker.ConnectRefused:
		b.WriteString("The peer host is up but nothing listens on that port (or a firewall rejects with RST): its kernel answered the SYN with RST and tcp_reset() in SYN_SENT reports ECONNREFUSED.")
	}
}

func failedSends(b *strings.Builder, n *tracker.Narrative) {
	if n.FailedSends > 0 {
		fmt.Fprintf(b, " %d of the retransmissions never left this host (%s): the local link or its neighbour entry was not usable, as when the cable is pulled here.",
			n.FailedSends, orUnknown(tcp.ErrnoName(n.FailedErrno)))
	}
}

func backoffText(n *tracker.Narrative) string {
	if n.BackoffReverted {
		return fmt.Sprintf("the RTO stopped doubling: an ICMP unreachable arrived during the backoff (sk_err_soft=%s) and the kernel reverted it (RFC 6069), so retransmissions stay frequent",
			orUnknown(tcp.ErrnoName(n.SkErrSoft)))
	}
	return "each expiry doubles the RTO (exponential backoff, capped at " + Secs(n.RTOMax) + ")"
}

func linearText(s tcp.Settings) string {
	if s.SynLinearTimeouts == 0 {
		return ""
	}
	return fmt.Sprintf(" (kept there for the first tcp_syn_linear_timeouts=%d retries)", s.SynLinearTimeouts)
}

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

func keepaliveText(s tcp.Settings) string {
	return fmt.Sprintf("keepalive_time=%s idle, then a probe every keepalive_intvl=%s, giving up after keepalive_probes=%d unanswered (%s + %d × %s = %s)",
		Secs(s.KeepaliveTime), Secs(s.KeepaliveIntvl), s.KeepaliveProbes,
		Secs(s.KeepaliveTime), s.KeepaliveProbes, Secs(s.KeepaliveIntvl), Secs(tcp.KeepaliveBudget(s)))
}

func expectedTimeoutErrno(n *tracker.Narrative) string {
	if tcp.Unreachable(n.SkErrSoft) {
		return Errno(n.SkErrSoft)
	}
	return "ETIMEDOUT"
}

func abortExplanation(reason string) string {
	switch reason {
	case "TCP_ABORT_ON_CLOSE":
		return "close() with unread data in the receive buffer: the kernel resets instead of sending FIN so the peer knows data was lost (RFC 2525)."
	case "TCP_ABORT_ON_LINGER":
		return "The socket lingered in FIN_WAIT2 longer than tcp_fin_timeout/TCP_LINGER2 allows."
	case "TCP_ABORT_ON_MEMORY":
		return "Too many orphaned sockets or TCP memory pressure: the kernel reset an orphan to free memory (tcp_max_orphans, tcp_mem)."
	case "TCP_STATE":
		return "An abortive close driven by the socket's state: SO_LINGER with a zero timeout, a disconnect, or a socket destroyed from outside (ss -K, SOCK_DESTROY)."
	case "TCP_DISCONNECT_WITH_DATA":
		return "connect(AF_UNSPEC) disconnected the socket with unsent or unread data."
	}
	return "The kernel sent an active reset (tcp_send_active_reset)."
}

// Step is one line of a timeline.
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
	}
	return s.Kind.String()
}

// NoticeSummary and NoticeExplanation word a notice.
func NoticeSummary(n *tracker.Notice) string {
	return fmt.Sprintf("a new connection took over a 4-tuple still in TIME_WAIT (closed %s ago)", Secs(n.Age))
}

// NoticeExplanation teaches what the kernel allowed.
func NoticeExplanation(n *tracker.Notice) string {
	return fmt.Sprintf("The earlier connection on %s -> %s closed actively %s ago; its TIME_WAIT (60 s, TCP_TIMEWAIT_LEN) guards against old duplicates. connect() reused it anyway, which tcp_tw_reuse allows for outgoing connections once the TIME_WAIT is over a second old, with TCP timestamps to tell old segments from new (PAWS).",
		n.Local, n.Remote, Secs(n.Age))
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

// untoldSummary: a connection in an episode whose end tcpwatch never saw.
func untoldSummary(n *tracker.Narrative) string {
	last := "in an outage"
	switch {
	case n.Retransmits > 0:
		last = fmt.Sprintf("stalled (%d RTO retransmission%s, no ACK for %s)", n.Retransmits, plural(n.Retransmits), Secs(n.Outage))
	case n.Probes > 0:
		last = fmt.Sprintf("keepalive probing (%d probe%s unanswered over %s)", n.Probes, plural(n.Probes), Secs(n.Outage))
	}
	return "the connection is gone from the kernel's socket table but how it ended was not seen: kernel records were lost; it was last " + last
}

const untoldExplanation = "The kernel dropped records while tcpwatch tracked this connection (stats.lost), and the ones that told its end (the move to CLOSE, the reset, the error, the socket's destruction) were among them. tcpwatch compares its connections with the kernel's own socket table (sock_diag) every few seconds; this one is no longer there, so it is told as ended, without a cause rather than with a guessed one. To see such ends, raise --ring-size or narrow the filters."
