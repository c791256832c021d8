package words

import (
	"fmt"

	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// leaks: a process keeps what its peers ended.
var leaks = []Entry{
	{Verdict: tracker.CloseWaitStuck, Family: Leaks, Episode: true, Severity: Warning,
		Summary: closeWaitSummary,
		Explain: func(*tracker.Narrative) string { return closeWaitExplanation }},
}

// closeWaitSummary: a process keeps sockets its peers closed.
func closeWaitSummary(n *tracker.Narrative) string {
	who := fmt.Sprintf("%s (pid %d)", orUnknown(n.Owner.Comm), n.Owner.PID)
	if n.Owner.PID == 0 {
		who = "a process tcpwatch could not name"
	}
	if !n.Final {
		return fmt.Sprintf("%s holds %d connection%s its peers closed, the oldest in CLOSE_WAIT for at least %s: it has not called close() on them",
			who, n.CloseWaitSockets, plural(n.CloseWaitSockets), Secs(n.CloseWaitFor))
	}
	how := "closed them"
	if n.CloseWaitExited {
		how = "exited, and its kernel closed them"
	}
	return fmt.Sprintf("%s %s after at least %s in CLOSE_WAIT (it held up to %d)", who, how, Secs(n.CloseWaitFor), n.CloseWaitSockets)
}

const closeWaitExplanation = "ESTABLISHED -> CLOSE_WAIT: the peer sent FIN, read() returns 0, and only the owning process can finish the connection, by calling close(). The kernel has no timer for CLOSE_WAIT: a process that never reads the end of file, or forgets to close, keeps the socket and its descriptor until it exits (a descriptor leak, the usual cause of \"too many open files\"). tcpwatch sends nothing when a connection enters CLOSE_WAIT: its socket scan (every half of --close-wait-after, at most 30 s) finds the sockets there and counts from the first scan that saw each, so \"at least\": the FIN came up to one scan period earlier, and a process is told within one scan period after the threshold. The scan then marks the stuck socket, and the kernel reports its end."
