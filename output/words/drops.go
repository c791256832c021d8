package words

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// DropPlace says where on this host a drop happened, naming the team to
// call: "netfilter (OUTPUT)", "the neighbour table (NEIGH_FAILED)".
func DropPlace(d tracker.Drop) string {
	if d.Site == tracker.SiteNoRoute6 {
		return "routing (no route: inet6_csk_xmit's route lookup failed; the kernel's reason: " + d.Reason + ")"
	}
	switch tcp.DropWhere(d.Reason) {
	case "netfilter":
		if d.Hook != "" {
			return "netfilter (" + d.Hook + ")"
		}
		return "netfilter"
	case "neighbour":
		return "the neighbour table (" + d.Reason + ": the next hop does not answer ARP/ND)"
	case "route":
		return "routing (" + d.Reason + ": no route)"
	case "device":
		return "the device (" + d.Reason + ": link down or no carrier)"
	case "qdisc":
		return "the queueing discipline (" + d.Reason + ")"
	case "tcp":
		return "TCP's own checks (" + d.Reason + ")"
	case "socket":
		return "the socket (" + d.Reason + ")"
	}
	return "the kernel (" + d.Reason + ")"
}

// places lists the places of one direction's drops in the connection's
// own host.
func places(n *tracker.Narrative, in bool) string {
	var parts []string
	for _, d := range n.Drops {
		if d.Inbound == in && !d.Elsewhere {
			parts = append(parts, DropPlace(d))
		}
	}
	return strings.Join(parts, " and ")
}

// sentFate says what became of the episode's sent packets: "7 RTO
// retransmissions, all dropped here by netfilter (OUTPUT)", "7 RTO
// retransmissions left this host". what is the packets' name.
func sentFate(n *tracker.Narrative, sent int, what string) string {
	name := fmt.Sprintf("%d %s%s", sent, what, plural(sent))
	if !n.DropsSeen {
		return name
	}
	out := n.DroppedOut()
	s := name + " left this host"
	// Retransmissions that failed here (FailedSends) never reached the
	// stack below: no drop tells them, and they did not leave.
	failed := 0
	if n.WindowProbes == 0 {
		failed = min(n.FailedSends, sent)
	}
	switch {
	case failed > 0:
		s = fmt.Sprintf("%s, %d failed here before leaving this host", name, failed)
		if failed == sent {
			s = name + ", every one failed here before leaving this host"
		}
		if out > 0 {
			s += fmt.Sprintf(", %d packet%s dropped here by %s", out, plural(out), places(n, false))
		}
		if n.LeftHost > 0 {
			s += fmt.Sprintf(", %d left this host", n.LeftHost)
		}
	case out > 0 && n.LeftHost == 0:
		return name + ", all dropped here by " + places(n, false)
	case out > 0:
		s = fmt.Sprintf("%s, %d dropped here by %s, %d left this host", name, out, places(n, false), n.LeftHost)
	}
	if e := n.DroppedElsewhere(); e > 0 {
		s += fmt.Sprintf(" (%d packet%s then dropped on this machine outside the connection's network namespace: a bridge or the node's firewall)", e, plural(e))
	}
	return s
}

// answering is the clause for the peer's answers that died here, "" if
// none did.
func answering(n *tracker.Narrative) string {
	in := n.DroppedIn()
	if in == 0 {
		return ""
	}
	verb := "were"
	if in == 1 {
		verb = "was"
	}
	return fmt.Sprintf("the peer is answering but this host drops the answers: %d of its segments %s dropped here by %s", in, verb, places(n, true))
}

// silence says how the episode's sent packets went: dropped here, or left
// and unanswered, or answered with the answers dropped here.
func silence(n *tracker.Narrative, sent int, what string) (head, fate string) {
	fate = sentFate(n, sent, what)
	switch {
	case !n.DropsSeen:
		return "", fate
	case n.DroppedIn() > 0:
		return answering(n), fate
	case n.DroppedOut() > 0 && n.LeftHost == 0:
		return "", fate
	}
	return "", fate + "; none answered"
}

func stalledSummary(n *tracker.Narrative) string {
	if n.WindowProbes > 0 && n.Retransmits == 0 {
		return windowStalledSummary(n)
	}
	if !n.DropsSeen {
		return fmt.Sprintf("the peer has stopped acknowledging: %d RTO retransmission%s, no ACK for %s; the kernel gives up in about %s",
			n.Retransmits, plural(n.Retransmits), Secs(n.Outage), Secs(n.GiveUpIn))
	}
	head, fate := silence(n, n.Retransmits, "RTO retransmission")
	switch {
	case head != "":
	case n.DroppedOut() > 0 && n.LeftHost == 0:
		head = "this host drops its own packets"
	default:
		head = "the peer has stopped acknowledging"
	}
	return fmt.Sprintf("%s: %s; no ACK for %s; the kernel gives up in about %s", head, fate, Secs(n.Outage), Secs(n.GiveUpIn))
}

func windowStalledSummary(n *tracker.Narrative) string {
	head, fate := silence(n, n.WindowProbes, "window probe")
	switch {
	case head != "":
	case n.DroppedOut() > 0 && n.LeftHost == 0:
		head = "new data cannot leave this host"
	default:
		head = "new data waits and the peer does not answer"
	}
	return fmt.Sprintf("%s: %s over %s; %d bytes wait to be sent; the kernel gives up in about %s",
		head, fate, Secs(n.Outage), n.NotSent, Secs(n.GiveUpIn))
}

// timeoutSummary is retransmit_timeout's summary when the drop path is
// watched, or after window probes.
func timeoutSummary(n *tracker.Narrative) string {
	if n.WindowProbes > 0 && n.Retransmits == 0 && n.ProbesAnswered > 0 && n.PeerWindow == 0 {
		return fmt.Sprintf("the peer's window stayed closed (its application did not read) and %s ran out after %d window probe%s over %s, %d answered with a closed window: %s",
			BudgetSettingText(n), n.WindowProbes, plural(n.WindowProbes), Secs(n.Outage), n.ProbesAnswered, Errno(n.Errno))
	}
	if n.WindowProbes > 0 && n.Retransmits == 0 {
		_, fate := silence(n, n.WindowProbes, "window probe")
		return fmt.Sprintf("new data could not be sent and the kernel gave up after %s, over %s: %s", fate, Secs(n.Outage), Errno(n.Errno))
	}
	head, fate := silence(n, n.Retransmits, "retransmission")
	if head != "" {
		return fmt.Sprintf("%s; the kernel gave up after %s, over %s: %s", head, fate, Secs(n.Outage), Errno(n.Errno))
	}
	return fmt.Sprintf("the peer stopped acknowledging and the kernel gave up after %s over %s: %s",
		strings.Replace(fate, " left this host", " that left this host", 1), Secs(n.Outage), Errno(n.Errno))
}

func zeroWindowSummary(n *tracker.Narrative) string {
	end := "nothing will end it: answered probes never count toward tcp_retries2 and TCP_USER_TIMEOUT is not set"
	if !n.Endless {
		end = fmt.Sprintf("TCP_USER_TIMEOUT=%s ends it in about %s", Secs(n.Settings.UserTimeout), Secs(n.GiveUpIn))
	}
	return fmt.Sprintf("the peer's application stopped reading: its receive window has been closed (%d bytes) for %s, %d window probe%s answered with a closed window, %d bytes from %s wait to be sent; %s",
		n.PeerWindow, Secs(n.Outage), n.ProbesAnswered, plural(n.ProbesAnswered), n.NotSent, ownerText(n), end)
}

func ownerText(n *tracker.Narrative) string {
	if n.Owner.PID == 0 {
		return "this side's application"
	}
	return fmt.Sprintf("%s (pid %d)", orUnknown(n.Owner.Comm), n.Owner.PID)
}

// windowExplanation teaches the probe timer, for window-probe episodes.
func windowExplanation(n *tracker.Narrative) string {
	var sb strings.Builder
	b := &sb
	s := n.Settings
	fmt.Fprintf(b, "Nothing is in flight and %d bytes wait, so the kernel runs the zero-window probe timer (tcp_probe_timer, ICSK_TIME_PROBE0; ss shows timer:(persist,...)), not the retransmission timer: no retransmission is ever traced. Each expiry sends a probe (new data if the peer's window allows it, else a zero-window probe), counts it in icsk_probes_out and doubles the interval (icsk_backoff, up to %s). An ACK from the peer resets icsk_probes_out to 0. ",
		n.NotSent, Secs(n.RTOMax))
	switch n.Verdict {
	case tracker.ZeroWindow:
		fmt.Fprintf(b, "Here the peer answers every probe with a window of %d bytes: its kernel is alive but its application does not read, so its receive buffer stays full. Because each answer resets the count, the probes never add up to tcp_retries2=%d (RFC 1122 4.2.2.17 keeps the sender open as long as the receiver answers). ",
			n.PeerWindow, s.Retries2)
		if n.Endless {
			b.WriteString("Without TCP_USER_TIMEOUT nothing ends this on either side: the writer blocks (or its buffer fills) for as long as the peer's application stays stuck. Look at the peer process that owns the other end.")
		} else {
			fmt.Fprintf(b, "TCP_USER_TIMEOUT=%s is measured from the first probe (icsk_probes_tstamp, Linux 5.11 and later, so 6.1, 6.12 and 6.18 alike), answered or not: the kernel will abort with ETIMEDOUT in about %s.",
				Secs(s.UserTimeout), Secs(n.GiveUpIn))
		}
	default:
		fmt.Fprintf(b, "Here %d probes in a row went unanswered (the peer's window is %d bytes). ", n.WindowProbes-n.ProbesAnswered, n.PeerWindow)
		if n.Budget.Setting == "TCP_USER_TIMEOUT" {
			fmt.Fprintf(b, "TCP_USER_TIMEOUT=%s, measured from the first probe, ends it in about %s with ETIMEDOUT.", Secs(s.UserTimeout), Secs(n.GiveUpIn))
		} else {
			fmt.Fprintf(b, "The kernel aborts with ETIMEDOUT at the expiry that finds icsk_probes_out >= tcp_retries2=%d: in about %s.", s.Retries2, Secs(n.GiveUpIn))
		}
	}
	b.WriteString(dropsExplanation(n))
	return b.String()
}

// dropsExplanation says where the episode's packets died and which team
// that points at ("" when the drop path is not watched).
func dropsExplanation(n *tracker.Narrative) string {
	if !n.DropsSeen {
		return ""
	}
	var sb strings.Builder
	b := &sb
	if len(n.Drops) == 0 {
		return " No packet of this connection was dropped on this host (skb:kfree_skb): what was sent left, and the silence is on the path or at the peer."
	}
	var parts []string
	for _, d := range n.Drops {
		who := "sent by this side"
		if d.Inbound {
			who = "from the peer"
		}
		parts = append(parts, fmt.Sprintf("%d %s by %s", d.Count, who, DropPlace(d)))
	}
	fmt.Fprintf(b, " This host dropped packets of this connection (skb:kfree_skb, reason as the kernel names it): %s.", strings.Join(parts, "; "))
	if n.DroppedIn() > 0 {
		b.WriteString(" The peer is alive and answering; its answers die here: look at this host's firewall or conntrack rules for the reply direction.")
	} else if tcp.DropWhere(n.Drops[0].Reason) == "netfilter" {
		b.WriteString(" The packets never left: look at this host's own firewall rules (nft list ruleset, iptables-save), not at the network or the peer.")
	}
	return b.String()
}

// windowVerdicts: the window-probe timer's verdict (issue 19); the
// listeners' are in listeners.go.
var windowVerdicts = []Entry{
	{Verdict: tracker.ZeroWindow, Family: Window, Episode: true, Severity: Warning,
		Errno:   int32(unix.ETIMEDOUT), // only if TCP_USER_TIMEOUT ends it
		Summary: zeroWindowSummary, Explain: windowExplanation},
}

// BudgetSettingText names what ended a window-probe episode.
func BudgetSettingText(n *tracker.Narrative) string {
	if n.Settings.UserTimeout > 0 {
		return "TCP_USER_TIMEOUT=" + Secs(n.Settings.UserTimeout)
	}
	return "the kernel's patience"
}
