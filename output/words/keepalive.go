package words

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// keepaliveVerdicts: an idle connection's keepalive probes go unanswered.
var keepaliveVerdicts = []Entry{
	{Verdict: tracker.KeepaliveProbing, Family: Keepalive, Episode: true, Severity: Warning,
		Errno: int32(unix.ETIMEDOUT), WriteErr: true,
		Summary: func(n *tracker.Narrative) string {
			return fmt.Sprintf("keepalive probe %d of %d sent, the previous one went unanswered: the idle peer has been silent for %s; the kernel gives up in about %s",
				n.Probes, n.Settings.KeepaliveProbes, Secs(n.Outage), Secs(n.GiveUpIn))
		},
		Explain: func(n *tracker.Narrative) string {
			return fmt.Sprintf("SO_KEEPALIVE is on: %s. icsk_probes_out=%d; when it reaches %d and the next interval passes with no answer, the kernel sends RST (TCP_KEEPALIVE_TIMEOUT) and %s gets %s. Any ACK from the peer resets the count.",
				keepaliveText(n.Settings), n.Probes, n.Settings.KeepaliveProbes, application(n), expectedErrno(n))
		}},

	{Verdict: tracker.KeepaliveTimeout, Family: Keepalive, Severity: Failure,
		Errno: int32(unix.ETIMEDOUT), WriteErr: true,
		Summary: func(n *tracker.Narrative) string {
			return fmt.Sprintf("the idle peer answered none of %d keepalive probes: the kernel reset the connection after %s of silence (%s)",
				n.Probes, Secs(n.Outage), Errno(n.Errno))
		},
		Explain: func(n *tracker.Narrative) string {
			return fmt.Sprintf("SO_KEEPALIVE: %s. With no answer to probe %d the kernel sent RST (reason %s) and reported %s to %s: the peer host is down, unreachable, or a middlebox dropped the connection. A peer that had rebooted would have answered with RST (peer_lost_state).",
				keepaliveText(n.Settings), n.Probes, orUnknown(n.ResetReason), Errno(n.Errno), application(n))
		}},
}

func keepaliveText(s tcp.Settings) string {
	return fmt.Sprintf("keepalive_time=%s idle, then a probe every keepalive_intvl=%s, giving up after keepalive_probes=%d unanswered (%s + %d × %s = %s)",
		Secs(s.KeepaliveTime), Secs(s.KeepaliveIntvl), s.KeepaliveProbes,
		Secs(s.KeepaliveTime), s.KeepaliveProbes, Secs(s.KeepaliveIntvl), Secs(tcp.KeepaliveBudget(s)))
}
