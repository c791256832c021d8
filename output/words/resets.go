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
			return fmt.Sprintf("the peer reset the connection (RST) while it was answering normally: %s", Errno(n.Errno))
		},
		Explain: func(n *tracker.Narrative) string {
			return fmt.Sprintf("tcp_receive_reset in %s with the peer acknowledging normally: its application aborted the connection (closed it with unread data, SO_LINGER 0, or died with unread data: RST reason TCP_ABORT_ON_CLOSE on its side), or its kernel rejected our segment. %s gets %s (EPIPE on a write after the reset).",
				n.ResetState, capital(application(n)), Errno(n.Errno))
		}},

	{Verdict: tracker.PeerLostState, Family: Resets, Severity: Failure, Errno: int32(unix.ECONNRESET),
		Summary: func(n *tracker.Narrative) string {
			what := fmt.Sprintf("%d retransmission%s", n.Retransmits, plural(n.Retransmits))
			if n.Retransmits == 0 {
				what = fmt.Sprintf("keepalive probe %d", n.Probes)
			}
			return fmt.Sprintf("the peer answered %s with RST after %s of silence: its host rebooted or lost the connection (%s)",
				what, Secs(n.Outage), Errno(n.Errno))
		},
		Explain: func(n *tracker.Narrative) string {
			what := fmt.Sprintf("our retransmissions (RTOs %s)", RTOList(n.RTOs))
			if n.Retransmits == 0 {
				what = fmt.Sprintf("keepalive probe %d (the connection was idle, so only the keepalive timer spoke)", n.Probes)
			}
			return fmt.Sprintf("A RST arrived in %s answering %s: the peer's kernel has no socket for this 4-tuple (reason NO_SOCKET on its side). That is what a host that crashed and rebooted does, or a NAT/firewall that forgot the flow. %s gets %s.",
				n.ResetState, what, capital(application(n)), Errno(n.Errno))
		}},
}

// application is who gets the connection's error.
func application(n *tracker.Narrative) string {
	if n.Orphan {
		return "no application (it had already closed the socket)"
	}
	return "the application"
}
