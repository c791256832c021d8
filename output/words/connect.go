package words

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// connects: the connection never got past its handshake.
var connects = []Entry{
	{Verdict: tracker.ConnectRefused, Family: Connect, Severity: Failure, Errno: int32(unix.ECONNREFUSED),
		Summary: func(n *tracker.Narrative) string {
			return fmt.Sprintf("connect() to %s was refused: the peer answered SYN with RST (%s)", n.Remote, Errno(n.Errno))
		},
		Explain: func(*tracker.Narrative) string {
			return "The peer host is up but nothing listens on that port (or a firewall rejects with RST): its kernel answered the SYN with RST and tcp_reset() in SYN_SENT reports ECONNREFUSED."
		}},

	{Verdict: tracker.ConnectTimeout, Family: Connect, Severity: Failure,
		Errno: int32(unix.ETIMEDOUT), WriteErr: true,
		Summary: connectTimeoutSummary,
		Explain: timeoutExplanation},
}

func connectTimeoutSummary(n *tracker.Narrative) string {
	return fmt.Sprintf("connect() to %s timed out: %d SYN retransmission%s unanswered over %s (%s)",
		n.Remote, n.Retransmits, plural(n.Retransmits), Secs(n.Outage), Errno(n.Errno))
}

func linearText(s tcp.Settings) string {
	if s.SynLinearTimeouts == 0 {
		return ""
	}
	return fmt.Sprintf(" (kept there for the first tcp_syn_linear_timeouts=%d retries)", s.SynLinearTimeouts)
}
