package words

import (
	"fmt"

	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// closes: one side closed the connection, normally or not.
var closes = []Entry{
	{Verdict: tracker.PeerClosed, Family: Closes, Severity: Normal,
		Summary: func(n *tracker.Narrative) string {
			if n.ResetState != 0 {
				return "the peer closed the connection (FIN), then reset it: its process closed the socket or died"
			}
			return "the peer closed the connection (FIN)"
		},
		// The normal ends are most of what --all tells, one per
		// connection end under churn: their words are fixed, no building.
		Explain: func(n *tracker.Narrative) string {
			if n.ResetState != 0 {
				return peerClosedExplanation + peerResetAfterFIN
			}
			return peerClosedExplanation
		}},

	{Verdict: tracker.LocalClosed, Family: Closes, Severity: Normal,
		Summary: func(*tracker.Narrative) string { return "this side closed the connection normally" },
		Explain: func(*tracker.Narrative) string { return localClosedExplanation }},

	{Verdict: tracker.LocalProcessExited, Family: Closes, Severity: Failure,
		Summary: func(n *tracker.Narrative) string {
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
		},
		Explain: func(n *tracker.Narrative) string {
			peer := "a normal close (peer_closed)"
			if n.SentReset {
				peer = "a reset (peer_reset)"
			}
			s := fmt.Sprintf("When a process dies its kernel closes its sockets (do_exit -> exit_files, the task has PF_EXITING): FIN if the receive buffer was empty, RST with reason TCP_ABORT_ON_CLOSE if unread data was thrown away. The peer sees %s; the connection dies with the process, not with the host.", peer)
			if n.Retransmits > 0 {
				s += fmt.Sprintf(" An outage was in progress (RTOs %s; %s): the socket lives on as an orphan until that budget runs out.", RTOList(n.RTOs), BudgetText(n))
			}
			return s
		}},

	{Verdict: tracker.LocalAbort, Family: Closes, Severity: Failure,
		Summary: func(n *tracker.Narrative) string {
			s := fmt.Sprintf("this side aborted the connection with RST (%s)", orUnknown(n.ResetReason))
			if n.Errno != 0 {
				s += ": " + Errno(n.Errno)
			}
			return s
		},
		Explain: func(n *tracker.Narrative) string {
			return abortExplanation(n.ResetReason) + " The peer gets ECONNRESET."
		}},
}

const (
	peerClosedExplanation  = "ESTABLISHED -> CLOSE_WAIT: a FIN arrived, and read() returns 0 (end of file). A peer process that exited or crashed with an empty receive buffer sends exactly the same FIN."
	peerResetAfterFIN      = " The RST that followed (the peer refusing data sent after its FIN, reason TCP_ABORT_ON_DATA on its side) means its socket is closed: reads still return 0, a write fails with EPIPE."
	localClosedExplanation = "close() or shutdown() sent FIN (ESTABLISHED -> FIN_WAIT1); the peer acknowledged and closed its side."
)

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
