package words

import (
	"fmt"

	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// lost: a connection's end that never reached tcpwatch, its records lost
// (or, when the kernel counted none lost, not seen all the same).
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
			if !n.LostRecords {
				// Only what the counters say: none of the kernel's
				// records was counted lost or skipped while it was tracked.
				return "the connection is gone from the kernel's socket table but how it ended was not seen, with no kernel record counted lost (stats.lost) nor skipped (stats.skipped); it was last " + last
			}
			return "the connection is gone from the kernel's socket table but how it ended was not seen: kernel records were lost (stats.lost) or skipped for want of room (stats.skipped.no_storage, troubled_full); it was last " + last
		},
		Explain: func(n *tracker.Narrative) string {
			const table = "tcpwatch compares its connections with the kernel's own socket table (sock_diag) every few seconds; this one is no longer there, so it is told as ended, without a cause rather than with a guessed one."
			if !n.LostRecords {
				return "No record of this connection's end (the move to CLOSE, the reset, the error, the socket's destruction) reached tcpwatch, and the kernel counted none lost or skipped while it was tracked (stats.lost did not grow: no ring buffer full, no program run skipped; nor stats.skipped: every socket's storage made, every connection in trouble marked). " + table
			}
			return "While tcpwatch tracked this connection the kernel dropped records (stats.lost: the ring buffer full, a program run skipped) or did not send them for want of room (stats.skipped: no_storage, a socket's storage not made, so it was never marked notable and its close and destruction were not sent; troubled_full, a connection in trouble not marked, whose destruction is then not told), and the ones that told its end (the move to CLOSE, the reset, the error, the socket's destruction) were among them. " + table + " To see such ends, raise --ring-size or narrow the filters (stats.lost), or find what took the kernel's memory or put so many connections in trouble at once (stats.skipped)."
		}},
}
