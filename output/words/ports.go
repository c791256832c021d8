package words

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// portVerdicts: connect() never sent its SYN.
var portVerdicts = []Entry{
	{Verdict: tracker.LocalPortsExhausted, Family: Connect, Severity: Failure, Errno: int32(unix.EADDRNOTAVAIL),
		Summary: portsSummary,
		Explain: func(*tracker.Narrative) string { return portsExplanation }},
}

// portsSummary: connect() found no free local port toward its destination.
func portsSummary(n *tracker.Narrative) string {
	s := fmt.Sprintf("connect() to %s failed with %s: no local port was free toward it", n.Remote, Errno(n.Errno))
	if f := n.Ports.Failures; f > 1 {
		s = fmt.Sprintf("%d more connect() calls to %s failed with %s: no local port was free toward it", f, n.Remote, Errno(n.Errno))
	}
	p := n.Ports
	if !p.Known {
		return s
	}
	return s + fmt.Sprintf(": %d socket%s in TIME_WAIT and %d other%s to it hold ports of ip_local_port_range %d-%d (%d ports); tcp_tw_reuse=%d (%s)",
		p.TimeWait, plural(p.TimeWait), p.Other, plural(p.Other), p.RangeLo, p.RangeHi, p.RangeHi-p.RangeLo+1, p.TwReuse, twReuseText(p.TwReuse))
}

func twReuseText(v int) string {
	switch v {
	case 0:
		return "off"
	case 1:
		return "on"
	case 2:
		return "loopback only"
	}
	return "unknown"
}

const portsExplanation = "tcp_v4/v6_connect() moved the socket to SYN_SENT, then inet_hash_connect() looked for a local port for this 4-tuple and found none: toward one destination address and port every connection needs a port of its own, and a connection closed by this side keeps its 4-tuple in TIME_WAIT for 60 s (TCP_TIMEWAIT_LEN), so a client that opens and closes connections faster than ports/60 per second runs out. The socket went back to CLOSE without sending a SYN and connect() returned EADDRNOTAVAIL (\"Cannot assign requested address\"). Remedies: reuse connections (keep-alive, pooling), widen net.ipv4.ip_local_port_range, let the server close first, or net.ipv4.tcp_tw_reuse=1 (connect() may take over a TIME_WAIT 4-tuple older than a second when both sides use TCP timestamps)."
