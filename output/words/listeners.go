package words

import (
	"fmt"
	"strings"

	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// listenerVerdicts: a local listener whose clients cannot connect. Each
// sentence ends with what the episode points at, so the reader knows
// which team to call (tracker.ListenerCause).
var listenerVerdicts = []Entry{
	{Verdict: tracker.AcceptQueueOverflow, Family: Listeners, Episode: true, Severity: Warning,
		Summary: func(n *tracker.Narrative) string {
			since := " since the listener was created"
			if n.Outage > 0 {
				since = " in " + Secs(n.Outage)
			}
			var b strings.Builder
			if n.Cause == tracker.BacklogTooSmall {
				fmt.Fprintf(&b, "the backlog of %s is too small: the kernel turned away %d SYN%s or handshake%s%s while the application does accept (the queue had room at some readings; now %d waiting for accept(), backlog %d)",
					n.Local, n.TurnedAway, plural(n.TurnedAway), plural(n.TurnedAway), since, n.QueueLen, n.QueueLimit)
			} else {
				fmt.Fprintf(&b, "the server stopped accepting: the accept queue of %s is full (%d waiting for accept(), backlog %d) and the kernel turned away %d SYN%s or handshake%s%s",
					n.Local, n.QueueLen, n.QueueLimit, n.TurnedAway, plural(n.TurnedAway), plural(n.TurnedAway), since)
			}
			b.WriteString(synackClause(n))
			b.WriteString(cookieClause(n))
			if n.Cause == tracker.BacklogTooSmall {
				fmt.Fprintf(&b, "; raise the listen() backlog of %s (and net.core.somaxconn), or make it accept faster", ownerText(n))
			} else {
				fmt.Fprintf(&b, "; its clients' connect() retries, then times out: the application is not accepting, call the owners of %s", ownerText(n))
			}
			return b.String()
		},
		Explain: func(n *tracker.Narrative) string {
			why := fmt.Sprintf("%s, the owner of the listener, is not calling accept(): it is stopped, blocked or overloaded. A larger backlog only buys time.", ownerText(n))
			if n.Cause == tracker.BacklogTooSmall {
				why = fmt.Sprintf("Some readings found the queue below its limit: %s does accept, but its bursts of connections exceed the backlog; raise it (listen()'s argument, capped by net.core.somaxconn).", ownerText(n))
			}
			return fmt.Sprintf("A connection the kernel completed waits in the listener's accept queue until the application calls accept(). The queue holds %d (the listen() backlog, capped by net.core.somaxconn) and has %d: a SYN or handshake-completing ACK that finds it full is dropped (sk_acceptq_is_full; counted in the listener's sk_drops and in ListenOverflows/ListenDrops of nstat), and the client retransmits its SYN with backoff until tcp_syn_retries runs out; a client whose ACK was dropped keeps its request socket, and the kernel retransmits its SYN-ACK (tcp_retransmit_synack) until tcp_synack_retries runs out. The kernel is fine; %s",
				n.QueueLimit, n.QueueLen, why)
		}},

	{Verdict: tracker.SynackUnanswered, Family: Listeners, Episode: true, Severity: Warning,
		Summary: func(n *tracker.Narrative) string {
			var b strings.Builder
			if n.Cause == tracker.SynFlood {
				fmt.Fprintf(&b, "a SYN flood, or clients that vanish after their SYN: the SYN queue of %s is full", n.Local)
			} else {
				fmt.Fprintf(&b, "clients of %s do not finish their handshake", n.Local)
			}
			fmt.Fprintf(&b, ": %d SYN-ACK%s retransmitted to %d client%s that never answered in %s (SYN queue %d, accept queue %d of %d)",
				n.SynackRetransmits, plural(n.SynackRetransmits), n.SynackClients, plural(n.SynackClients), Secs(n.Outage),
				n.SynQueueLen, n.QueueLen, n.QueueLimit)
			b.WriteString(cookieClause(n))
			if n.Cause == tracker.SynFlood {
				b.WriteString("; the application is fine: call the network or security team (spoofed SYNs, or a firewall that lets SYNs in and drops what follows)")
			} else {
				b.WriteString("; the application is fine: the SYN-ACKs or the clients' ACKs are lost on the way, or the clients vanish after their SYN: call the network team")
			}
			return b.String()
		},
		Explain: func(n *tracker.Narrative) string {
			return fmt.Sprintf("A SYN to a listener creates a request socket (the SYN queue, bounded by the listen() backlog %d) and is answered with a SYN-ACK; the client's ACK turns it into a connection in the accept queue. These clients never sent that ACK: the kernel retransmitted their SYN-ACKs with backoff (tcp:tcp_retransmit_synack, up to tcp_synack_retries, 5 by default: about 63 s) and then forgets them. The accept queue had room (%d of %d), so the application is not the cause. When the SYN queue is full, the kernel answers new SYNs with SYN cookies (tcp_syncookies=1; =2 always) and keeps no request socket for them, or drops them (=0). %s",
				n.QueueLimit, n.QueueLen, n.QueueLimit, cookieFacts(n))
		}},
}

// synackClause tells the SYN-ACKs an accept-queue overflow made the
// kernel retransmit.
func synackClause(n *tracker.Narrative) string {
	var parts []string
	if n.SynackAcked > 0 {
		parts = append(parts, fmt.Sprintf("%d client%s whose ACK found the queue full", n.SynackAcked, plural(n.SynackAcked)))
	}
	if n.SynackClients > 0 {
		parts = append(parts, fmt.Sprintf("%d that never answered", n.SynackClients))
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("; %d SYN-ACK%s retransmitted to %s", n.SynackRetransmits, plural(n.SynackRetransmits), strings.Join(parts, " and "))
}

// cookieClause tells the SYN cookies of the listener's namespace, when
// some were sent or SYNs were dropped for a full SYN queue.
func cookieClause(n *tracker.Narrative) string {
	switch {
	case !n.CookiesKnown:
		return ""
	case n.CookiesSent > 0:
		return fmt.Sprintf("; SYN cookies in use: %d sent in its network namespace (tcp_syncookies=%d)", n.CookiesSent, n.Syncookies)
	case n.SynQueueFullDrops > 0:
		return fmt.Sprintf("; %d SYN%s dropped in its network namespace for a full SYN queue (tcp_syncookies=%d)", n.SynQueueFullDrops, plural(n.SynQueueFullDrops), n.Syncookies)
	}
	return ""
}

// cookieFacts says what the namespace's counters tell of SYN cookies.
func cookieFacts(n *tracker.Narrative) string {
	if !n.CookiesKnown {
		return "The namespace's SYN counters (/proc/net/netstat) could not be read."
	}
	return fmt.Sprintf("Its network namespace (tcp_syncookies=%d) sent %d SYN cookies and dropped %d SYNs for a full SYN queue meanwhile (SyncookiesSent, TCPReqQFullDrop: the kernel counts them per namespace, not per listener).",
		n.Syncookies, n.CookiesSent, n.SynQueueFullDrops)
}
