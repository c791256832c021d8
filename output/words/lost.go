package words

import (
	"fmt"

	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// lost: the records that told a connection's end were lost.
var lost = []Entry{
	{Verdict: tracker.Untold, Family: Lost, Severity: Failure,
		Summary: func(n *tracker.Narrative) string {
			last := "in an outage"
			switch {
			case n.Retransmits > 0:
				last = fmt.Sprintf("stalled (%d RTO retransmission%s, no ACK for %s)", n.Retransmits, plural(n.Retransmits), Secs(n.Outage))
			case n.Probes > 0:
				last = fmt.Sprintf("keepalive probing (%d probe%s unanswered over %s)", n.Probes, plural(n.Probes), Secs(n.Outage))
			}
			return "the connection is gone from the kernel's socket table but how it ended was not seen: kernel records were lost; it was last " + last
		},
		Explain: func(*tracker.Narrative) string {
			return "The kernel dropped records while tcpwatch tracked this connection (stats.lost), and the ones that told its end (the move to CLOSE, the reset, the error, the socket's destruction) were among them. tcpwatch compares its connections with the kernel's own socket table (sock_diag) every few seconds; this one is no longer there, so it is told as ended, without a cause rather than with a guessed one. To see such ends, raise --ring-size or narrow the filters."
		}},
}
