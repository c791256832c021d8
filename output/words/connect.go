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

	// The application's own connect timeout: it reports the failure in its
	// own words, no errno from the kernel.
	{Verdict: tracker.ConnectAbandoned, Family: Connect, Severity: Failure,
		Summary: func(n *tracker.Narrative) string {
			return fmt.Sprintf("the application gave up on connect() to %s after %s: %d SYN retransmission%s unanswered, long before the kernel would have (tcp_syn_retries=%d: %s)",
				n.Remote, Secs(n.Outage), n.Retransmits, plural(n.Retransmits), n.Budget.Value, Secs(n.Budget.Limit))
		},
		Explain: func(n *tracker.Narrative) string {
			return fmt.Sprintf("No SYN-ACK and no RST came back: a black hole (host down, route missing, firewall dropping). The application closed its connecting socket itself after %s, with no error from the kernel: its own connect timeout (curl --connect-timeout, a client library's connect timeout, a socket timeout), which it reports in its own words. The kernel would have kept retransmitting the SYN: %s, then connect() would have failed with ETIMEDOUT (connect_timeout).",
				Secs(n.Outage), BudgetText(n))
		}},
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
