package words

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// outages: the peer stopped acknowledging; the retransmission timer
// decides whether the connection survives.
var outages = []Entry{
	{Verdict: tracker.Stalled, Family: Outages, Episode: true, Severity: Warning,
		Errno: int32(unix.ETIMEDOUT), WriteErr: true,
		Summary: stalledSummary,
		Explain: func(n *tracker.Narrative) string {
			if n.WindowProbes > 0 && n.Retransmits == 0 {
				return windowExplanation(n)
			}
			s := fmt.Sprintf("The retransmission timer fired %d time%s with nothing acknowledged (RTOs %s); %s. The budget: %s. The kernel checks it only when the RTO fires, so it will kill the connection at the first expiry past it, about %s from now",
				n.Retransmits, plural(n.Retransmits), RTOList(n.RTOs), backoffText(n), BudgetText(n), Secs(n.GiveUpIn))
			if n.Orphan {
				s += "; no application holds the socket any more, so nobody will see the error."
			} else {
				s += fmt.Sprintf(", and the application will then get %s.", expectedErrno(n))
			}
			return s + failedSends(n) + dropsExplanation(n)
		}},

	{Verdict: tracker.Recovered, Family: Outages, Episode: true, Severity: Normal,
		Summary: func(n *tracker.Narrative) string {
			if n.WindowProbes > 0 && n.Retransmits == 0 {
				return fmt.Sprintf("the waiting data left after %s of window probing (%d probe%s): the peer's window opened or this host stopped dropping it",
					Secs(n.Outage), n.WindowProbes, plural(n.WindowProbes))
			}
			if n.Probes > 0 && n.Retransmits == 0 {
				return fmt.Sprintf("the idle peer answered a keepalive probe after %d unanswered; the connection is alive", n.Probes)
			}
			return fmt.Sprintf("the peer answered again after a %s outage; %d RTO retransmission%s went unanswered before it; the application saw only a delay",
				Secs(n.Outage), n.Retransmits, plural(n.Retransmits))
		},
		Explain: func(n *tracker.Narrative) string {
			if n.WindowProbes > 0 && n.Retransmits == 0 {
				return "The zero-window probe timer stopped: an ACK that opens the window cancels it (tcp_ack_probe), or a probe found data in flight again. The data that waited is being sent."
			}
			if n.Probes > 0 && n.Retransmits == 0 {
				return fmt.Sprintf("Any ACK resets icsk_probes_out to 0 and re-arms the keepalive timer (%s).", keepaliveText(n.Settings))
			}
			return fmt.Sprintf("The congestion state went from Loss back to %s when a retransmission was acknowledged. The outage (%s, RTOs %s) ended inside the budget (%s), so the connection survived.",
				n.CAState, Secs(n.Outage), RTOList(n.RTOs), BudgetText(n))
		}},

	{Verdict: tracker.RetransmitTimeout, Family: Outages, Severity: Failure,
		Errno: int32(unix.ETIMEDOUT), WriteErr: true,
		Summary: func(n *tracker.Narrative) string {
			if n.Connecting {
				return connectTimeoutSummary(n)
			}
			if n.DropsSeen || n.WindowProbes > 0 && n.Retransmits == 0 {
				return timeoutSummary(n)
			}
			return fmt.Sprintf("the peer stopped acknowledging and the kernel gave up after %d retransmission%s over %s: %s",
				n.Retransmits, plural(n.Retransmits), Secs(n.Outage), Errno(n.Errno))
		},
		Explain: timeoutExplanation},

	{Verdict: tracker.HostUnreachable, Family: Outages, Severity: Failure, Errno: int32(unix.EHOSTUNREACH),
		Summary: func(n *tracker.Narrative) string {
			if n.Connecting {
				return fmt.Sprintf("connect() to %s failed: the host is unreachable after %d SYN retransmission%s over %s (%s)",
					n.Remote, n.Retransmits, plural(n.Retransmits), Secs(n.Outage), Errno(n.Errno))
			}
			if n.WindowProbes > 0 && n.Retransmits == 0 {
				return fmt.Sprintf("the peer is unreachable: new data could not be sent, and after %s over %s the kernel gave up with %s",
					sentFate(n, n.WindowProbes, "window probe"), Secs(n.Outage), Errno(n.Errno))
			}
			if n.DropsSeen && n.DroppedOut() > 0 {
				return fmt.Sprintf("the peer is unreachable: after %s over %s the kernel gave up with %s",
					sentFate(n, n.Retransmits, "retransmission"), Secs(n.Outage), Errno(n.Errno))
			}
			return fmt.Sprintf("the peer is unreachable: after %d retransmission%s over %s the kernel gave up with %s",
				n.Retransmits, plural(n.Retransmits), Secs(n.Outage), Errno(n.Errno))
		},
		Explain: func(n *tracker.Narrative) string {
			if n.Connecting {
				return fmt.Sprintf("connect() sent SYNs that could not be delivered: the neighbour (ARP/ND) lookup for the next hop failed or a router answered ICMP unreachable, so the kernel reported %s. %s.",
					Errno(n.Errno), BudgetText(n))
			}
			return fmt.Sprintf("The route to the peer failed while it was unacknowledged: a router's ICMP host/net unreachable or a failed ARP/neighbour lookup is a soft error for an established connection (sk_err_soft=%s); RTOs %s (%s). When the budget ran out (%s) the soft error became the error %s sees: %s.",
				orUnknown(tcp.ErrnoName(n.SkErrSoft)), RTOList(n.RTOs), backoffText(n), BudgetText(n), application(n), Errno(n.Errno)) + failedSends(n) + dropsExplanation(n)
		}},
}

// timeoutExplanation explains a connection the retransmission timer
// killed: an established one (retransmit_timeout) or one still in its
// handshake (connect_timeout).
func timeoutExplanation(n *tracker.Narrative) string {
	if n.Connecting {
		return fmt.Sprintf("No SYN-ACK and no RST came back: a black hole (host down, route missing, firewall dropping). The SYN RTO starts at 1 s%s and doubles; %s, after which connect() fails with %s.",
			linearText(n.Settings), BudgetText(n), Errno(n.Errno))
	}
	if n.WindowProbes > 0 && n.Retransmits == 0 {
		return fmt.Sprintf("New data waited with nothing in flight, so the kernel probed the window (tcp_probe_timer) instead of retransmitting; after %d window probes the expiry that found icsk_probes_out >= tcp_retries2=%d, or TCP_USER_TIMEOUT, killed the connection with sk_err=%s for %s.",
			n.WindowProbes, n.Settings.Retries2, Errno(n.Errno), application(n)) + dropsExplanation(n)
	}
	return fmt.Sprintf("The budget: %s; the RTOs were %s. When the budget ran out at an RTO expiry, tcp_write_timeout() killed the connection with sk_err=%s for %s. Nothing came back, not even an ICMP error: the peer host died, the cable or path is down, or a firewall drops the traffic.",
		BudgetText(n), RTOList(n.RTOs), Errno(n.Errno), application(n)) + failedSends(n) + dropsExplanation(n)
}

// expectedErrno names the error an episode's application will get: in
// full when a soft error decides it, else by name.
func expectedErrno(n *tracker.Narrative) string {
	if e := ImpliedErrno(n); e != int32(unix.ETIMEDOUT) {
		return Errno(e)
	}
	return "ETIMEDOUT"
}

func failedSends(n *tracker.Narrative) string {
	if n.FailedSends == 0 {
		return ""
	}
	s := fmt.Sprintf(" %d of the retransmissions never left this host (%s): the local link or its neighbour entry was not usable, as when the cable is pulled here.",
		n.FailedSends, orUnknown(tcp.ErrnoName(n.FailedErrno)))
	if n.TimerRestarted {
		s += " The segment the last expiry could not send was sent after it, when the copy holding it up on this host was freed (a failed neighbour entry frees what it queued); sending the queue's head restarted the retransmission timer for a whole RTO, so the kernel checks its budget that much later."
	}
	return s
}

func backoffText(n *tracker.Narrative) string {
	if n.BackoffReverted {
		return fmt.Sprintf("the RTO stopped doubling: an ICMP unreachable arrived during the backoff (sk_err_soft=%s) and the kernel reverted it (RFC 6069), so retransmissions stay frequent",
			orUnknown(tcp.ErrnoName(n.SkErrSoft)))
	}
	return "each expiry doubles the RTO (exponential backoff, capped at " + Secs(n.RTOMax) + ")"
}
