package words

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// resets: the peer's kernel reset the connection.
var resets = []Entry{
	{Verdict: tracker.PeerReset, Family: Resets, Severity: Failure, Errno: int32(unix.ECONNRESET),
		Summary: func(n *tracker.Narrative) string {
			if p := n.PeerEnd; p != nil {
				return fmt.Sprintf("the peer reset the connection (RST): its side had ended it %s earlier (%s): %s", Secs(p.Before), p.Verdict, Errno(n.Errno))
			}
			return fmt.Sprintf("the peer reset the connection (RST): %s", Errno(n.Errno))
		},
		Explain: func(n *tracker.Narrative) string {
			return fmt.Sprintf("tcp_receive_reset in %s with nothing of ours unanswered before it: its application aborted the connection (closed it with unread data, SO_LINGER 0, or died with unread data: RST reason TCP_ABORT_ON_CLOSE on its side), its kernel had ended the connection on its own (a keepalive or retransmission timeout while the path was down) and answered our next segment with RST, or it rejected our segment. %s gets %s (EPIPE on a write after the reset).",
				n.ResetState, capital(application(n)), Errno(n.Errno)) + peerEndText(n)
		}},

	{Verdict: tracker.PeerLostState, Family: Resets, Severity: Failure, Errno: int32(unix.ECONNRESET),
		Summary: func(n *tracker.Narrative) string {
			what := fmt.Sprintf("%d retransmission%s", n.Retransmits, plural(n.Retransmits))
			if n.Retransmits == 0 {
				what = fmt.Sprintf("keepalive probe %d", n.Probes)
			}
			if p := n.PeerEnd; p != nil {
				return fmt.Sprintf("the peer answered %s with RST after %s of silence: its side had ended the connection %s earlier (%s) (%s)",
					what, Secs(n.Outage), Secs(p.Before), p.Verdict, Errno(n.Errno))
			}
			return fmt.Sprintf("the peer answered %s with RST after %s of silence: it no longer had the connection (its host rebooted, or its side ended it while the path was silent) (%s)",
				what, Secs(n.Outage), Errno(n.Errno))
		},
		Explain: func(n *tracker.Narrative) string {
			what := fmt.Sprintf("our retransmissions (RTOs %s)", RTOList(n.RTOs))
			if n.Retransmits == 0 {
				what = fmt.Sprintf("keepalive probe %d (the connection was idle, so only the keepalive timer spoke)", n.Probes)
			}
			return fmt.Sprintf("A RST arrived in %s answering %s: the peer's kernel has no socket for this 4-tuple (reason NO_SOCKET on its side). From this side alone that is a host that crashed and rebooted, a peer whose own timers ended the connection while the path was silent (its keepalive or retransmission timeout), or a NAT/firewall that forgot the flow. %s gets %s.",
				n.ResetState, what, capital(application(n)), Errno(n.Errno)) + peerEndText(n)
		}},
}

// peerEndText joins the other end's story, where tcpwatch saw it on this
// host.
func peerEndText(n *tracker.Narrative) string {
	p := n.PeerEnd
	if p == nil {
		return ""
	}
	return fmt.Sprintf(" tcpwatch saw the other end on this host (netns %d): told %s %s before this reset; the RST is its kernel answering for a connection it had already ended.",
		p.NetNS, p.Verdict, Secs(p.Before))
}

// application is who gets the connection's error.
func application(n *tracker.Narrative) string {
	if n.Orphan {
		return "no application (it had already closed the socket)"
	}
	return "the application"
}
