package tracker

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// narrate builds the narrative for c's verdict v and hands it to emit.
// The wording lives here: every sentence cites the kernel figures that
// decided it.
func (t *Tracker) narrate(c *conn, v Verdict, final bool, now time.Duration) {
	ev := &c.last
	n := &Narrative{
		Time:     t.wallAtZero.Add(now),
		Verdict:  v,
		Final:    final,
		Cookie:   c.cookie,
		Local:    c.local,
		Remote:   c.remote,
		NetNS:    c.netns,
		PID:      c.pid,
		Comm:     c.comm,
		State:    c.state,
		Settings: ev.Settings,
		RTOMax:   ev.RTOMax,
		Timeline: t.timeline(c),
	}
	if v == LocalProcessExited {
		n.ExitSignal = int(c.exitCode & 0x7f)
		n.ExitStatus = int(c.exitCode>>8) & 0xff
		n.SentReset = c.sentReset
	}
	if c.sentReset {
		n.ResetReason = t.cfg.ResetReasons.Name(c.sentReason)
	}
	n.Errno = c.errnoSeen(v)
	x := explainer{n: n, c: c, ev: ev, now: now}
	x.explain()
	t.counts[v]++
	t.emit(n)
}

// errnoSeen is the error the application gets: the one the kernel
// reported on the socket, else the first a system call returned, else the
// one the verdict implies.
func (c *conn) errnoSeen(v Verdict) int32 {
	switch {
	case v.Episode():
		return 0
	case c.errno != 0:
		return c.errno
	case c.appErrno != 0:
		return c.appErrno
	}
	switch v {
	case PeerReset, PeerLostState:
		return 104 // ECONNRESET
	case ConnectRefused:
		return errECONNREFUSED
	case PeerClosed:
		if c.recvReset {
			return 32 // EPIPE: the reset came after the peer's FIN
		}
	}
	return 0
}

type explainer struct {
	n   *Narrative
	c   *conn
	ev  *figures
	now time.Duration
}

func (x *explainer) explain() {
	n, c, ev := x.n, x.c, x.ev
	s := ev.Settings
	budget := tcp.RetransmitBudget(s.Retries2, ev.RTOMax)
	budgetText := fmt.Sprintf("tcp_retries2=%d allows %s from the first retransmission (tcp_model_timeout: %s)",
		s.Retries2, secs(budget), budgetFormula(s.Retries2, ev.RTOMax))
	if s.UserTimeout > 0 {
		budget = s.UserTimeout
		budgetText = fmt.Sprintf("TCP_USER_TIMEOUT=%s replaces the tcp_retries2 budget", secs(s.UserTimeout))
	}
	kaBudget := s.KeepaliveTime + time.Duration(s.KeepaliveProbes)*s.KeepaliveIntvl
	kaText := fmt.Sprintf("keepalive_time=%s idle, then a probe every keepalive_intvl=%s, giving up after keepalive_probes=%d unanswered (%s + %d × %s = %s)",
		secs(s.KeepaliveTime), secs(s.KeepaliveIntvl), s.KeepaliveProbes,
		secs(s.KeepaliveTime), s.KeepaliveProbes, secs(s.KeepaliveIntvl), secs(kaBudget))

	switch n.Verdict {
	case Stalled:
		// The kernel's own count: not every expiry reaches the tracepoint.
		n.Retransmits = max(c.stallRetrans, int(ev.Retransmits))
		n.RTOs = append([]time.Duration(nil), c.rtos...)
		n.Outage = x.now - c.silenceStart
		giveUp := projectGiveUp(c.stallFirst, ev, budget)
		n.GiveUpIn = max(giveUp-x.now, 0)
		n.Summary = fmt.Sprintf("the peer has stopped acknowledging: %d RTO retransmission%s, no ACK for %s; the kernel gives up in about %s",
			n.Retransmits, plural(n.Retransmits), secs(n.Outage), secs(n.GiveUpIn))
		backoff := "each expiry doubles the RTO (exponential backoff, capped at " + secs(ev.RTOMax) + ")"
		if isUnreachable(ev.SkErrSoft) {
			backoff = fmt.Sprintf("an ICMP/neighbour unreachable (sk_err_soft=%s) reverts the backoff (RFC 6069), so the RTO stays short", tcp.ErrnoName(ev.SkErrSoft))
		}
		n.Explanation = fmt.Sprintf("The retransmission timer fired %d time%s with nothing acknowledged (RTOs %s); %s. The budget: %s. The kernel checks it only when the RTO fires, so it will kill the connection at the first expiry past it, about %s from now, and the application will then get %s.",
			n.Retransmits, plural(n.Retransmits), rtoList(n.RTOs), backoff, budgetText, secs(n.GiveUpIn), expectedTimeoutErrno(ev))

	case Recovered:
		if c.stallFirst != 0 {
			n.Retransmits = c.stallRetrans
			n.RTOs = append([]time.Duration(nil), c.rtos...)
			n.Outage = x.now - c.silenceStart
			n.Summary = fmt.Sprintf("the peer answered again after a %s outage that cost %d RTO retransmission%s; the application saw only a delay",
				secs(n.Outage), n.Retransmits, plural(n.Retransmits))
			n.Explanation = fmt.Sprintf("The congestion state went from Loss back to %s when a retransmission was acknowledged. The outage (%s, RTOs %s) ended inside the budget (%s), so the connection survived.",
				ev.CAState, secs(n.Outage), rtoList(n.RTOs), budgetText)
		} else {
			n.Probes = c.probes
			n.Outage = x.now - c.probeSince
			n.Summary = fmt.Sprintf("the idle peer answered a keepalive probe after %d unanswered; the connection is alive", c.probes)
			n.Explanation = fmt.Sprintf("Any ACK resets icsk_probes_out to 0 and re-arms the keepalive timer (%s).", kaText)
		}

	case KeepaliveProbing:
		n.Probes = c.probes
		n.Outage = x.now - c.probeSince
		left := int(s.KeepaliveProbes) - c.probes
		n.GiveUpIn = max(time.Duration(left+1)*s.KeepaliveIntvl-(x.now-ev.Mono), 0)
		n.Summary = fmt.Sprintf("keepalive probe %d of %d sent, the previous one went unanswered: the idle peer has been silent for %s; the kernel gives up in about %s",
			c.probes, s.KeepaliveProbes, secs(n.Outage), secs(n.GiveUpIn))
		n.Explanation = fmt.Sprintf("SO_KEEPALIVE is on: %s. icsk_probes_out=%d; when it reaches %d and the next interval passes with no answer, the kernel sends RST (TCP_KEEPALIVE_TIMEOUT) and the application gets ETIMEDOUT. Any ACK from the peer resets the count.",
			kaText, c.probes, s.KeepaliveProbes)

	case KeepaliveTimeout:
		n.Probes = c.probes
		n.Outage = x.now - c.probeSince
		if c.probeSince == 0 {
			n.Outage = ev.AckAge
		}
		n.Summary = fmt.Sprintf("the idle peer answered none of %d keepalive probes: the kernel reset the connection after %s of silence (%s)",
			c.probes, secs(n.Outage), errnoLabel(n.Errno))
		n.Explanation = fmt.Sprintf("SO_KEEPALIVE: %s. With no answer to probe %d the kernel sent RST (reason %s) and reported %s: the peer host is down, unreachable, or a middlebox dropped the connection. A peer that had rebooted would have answered with RST (peer_lost_state).",
			kaText, c.probes, orUnknown(n.ResetReason), errnoLabel(n.Errno))

	case RetransmitTimeout, HostUnreachable:
		n.Retransmits = max(c.stallRetrans, int(ev.Retransmits))
		n.RTOs = append([]time.Duration(nil), c.rtos...)
		if c.silenceStart != 0 {
			n.Outage = x.now - c.silenceStart
		} else {
			n.Outage = ev.AckAge
		}
		if n.Verdict == RetransmitTimeout {
			n.Summary = fmt.Sprintf("the peer stopped acknowledging and the kernel gave up after %d retransmission%s over %s: %s",
				n.Retransmits, plural(n.Retransmits), secs(n.Outage), errnoLabel(n.Errno))
			n.Explanation = fmt.Sprintf("The budget: %s; the RTO grew %s by exponential backoff. When the budget ran out at an RTO expiry, tcp_write_timeout() killed the connection with sk_err=%s. Nothing came back, not even an ICMP error: the peer host died, the cable or path is down, or a firewall drops the traffic.",
				budgetText, rtoList(n.RTOs), errnoLabel(n.Errno))
			if c.failedSends > 0 {
				n.Explanation += fmt.Sprintf(" %d of the retransmissions never left this host (%s): the local link or its neighbour entry was not usable, as when the cable is pulled here.",
					c.failedSends, tcp.ErrnoName(c.failedErrno))
			}
		} else {
			n.Summary = fmt.Sprintf("the peer is unreachable: after %d retransmission%s over %s the kernel gave up with %s",
				n.Retransmits, plural(n.Retransmits), secs(n.Outage), errnoLabel(n.Errno))
			n.Explanation = fmt.Sprintf("An ICMP host/net unreachable from a router, or a failed ARP/neighbour lookup for the next hop, is a soft error for an established connection (sk_err_soft=EHOSTUNREACH) and reverts the RTO backoff (RFC 6069): RTOs %s. When the budget ran out (%s) the soft error became the error the application sees: %s.",
				rtoList(n.RTOs), budgetText, errnoLabel(n.Errno))
		}

	case PeerLostState:
		n.Retransmits = max(c.stallRetrans, c.recvRetransmits)
		n.Probes = max(c.probes, c.recvProbes)
		if c.silenceStart != 0 {
			n.Outage = x.now - c.silenceStart
		} else {
			n.Outage = ev.AckAge
		}
		what := fmt.Sprintf("%d retransmission%s", n.Retransmits, plural(n.Retransmits))
		if n.Retransmits == 0 {
			what = fmt.Sprintf("keepalive probe %d", n.Probes)
		}
		n.Summary = fmt.Sprintf("the peer answered %s with RST after %s of silence: its host rebooted or lost the connection (%s)",
			what, secs(n.Outage), errnoLabel(n.Errno))
		n.Explanation = fmt.Sprintf("tcp_receive_reset in %s while icsk_retransmits=%d, icsk_probes_out=%d: the peer's kernel has no socket for this 4-tuple and answers with RST (reason NO_SOCKET on its side). That is what a host that crashed and rebooted does, or a NAT/firewall that forgot the flow. The application gets %s.",
			c.recvResetState, c.recvRetransmits, c.recvProbes, errnoLabel(n.Errno))

	case PeerReset:
		n.Summary = fmt.Sprintf("the peer reset the connection (RST) with no silence before it: %s", errnoLabel(n.Errno))
		n.Explanation = fmt.Sprintf("tcp_receive_reset in %s with the peer acknowledging normally: its application aborted the connection (closed it with unread data, SO_LINGER 0, or died with unread data, RST reason TCP_ABORT_ON_CLOSE), or its kernel rejected our segment. The application gets %s (EPIPE on a write after the reset).",
			c.recvResetState, errnoLabel(n.Errno))

	case PeerClosed:
		if c.recvReset {
			n.Summary = fmt.Sprintf("the peer closed the connection (FIN), then reset it: it no longer has this connection, most likely its process closed or died (%s)", errnoLabel(n.Errno))
			n.Explanation = "ESTABLISHED -> CLOSE_WAIT: a FIN arrived. A process that exits or crashes gets the same FIN from its kernel, so on the wire a crash with an empty receive buffer looks exactly like close(). The RST that followed (typically the peer refusing data we sent after its FIN, reason TCP_ABORT_ON_DATA on its side) says its socket no longer reads: write() then fails with EPIPE, read() with ECONNRESET."
		} else {
			n.Summary = "the peer closed the connection (FIN)"
			n.Explanation = "ESTABLISHED -> CLOSE_WAIT: a FIN arrived, read() returns 0. A peer process that exited or crashed with an empty receive buffer sends exactly the same FIN."
		}

	case LocalClosed:
		n.Summary = "this side closed the connection normally"
		n.Explanation = "close() or shutdown() sent FIN (ESTABLISHED -> FIN_WAIT1); the peer acknowledged and closed its side."

	case LocalProcessExited:
		how := "exited"
		if n.ExitSignal != 0 {
			how = "was killed by " + signalName(n.ExitSignal)
		} else {
			how = fmt.Sprintf("exited with status %d", n.ExitStatus)
		}
		pkt, peer := "FIN", "a normal close (peer_closed)"
		if n.SentReset {
			pkt, peer = "RST ("+orUnknown(n.ResetReason)+")", "a reset (peer_reset)"
		}
		n.Summary = fmt.Sprintf("the owning process %s (pid %d) %s with the connection open; its kernel closed it with %s",
			orUnknown(c.comm), c.pid, how, pkt)
		n.Explanation = fmt.Sprintf("When a process dies its kernel closes its sockets (do_exit -> exit_files, the task has PF_EXITING): FIN if the receive buffer was empty, RST with reason TCP_ABORT_ON_CLOSE if unread data was thrown away. The peer sees %s; the connection dies with the process, not with the host.", peer)

	case LocalAbort:
		n.Summary = fmt.Sprintf("this side aborted the connection with RST (%s)", orUnknown(n.ResetReason))
		if n.Errno != 0 {
			n.Summary += ": " + errnoLabel(n.Errno)
		}
		n.Explanation = abortExplanation(n.ResetReason) + " The peer gets ECONNRESET."

	case ConnectRefused:
		n.Summary = fmt.Sprintf("connect() to %s was refused: the peer answered SYN with RST (%s)", c.remote, errnoLabel(n.Errno))
		n.Explanation = "The peer host is up but nothing listens on that port (or a firewall rejects with RST): its kernel answered the SYN with RST and tcp_reset() in SYN_SENT reports ECONNREFUSED."

	case ConnectTimeout:
		n.Retransmits = c.synRetrans
		n.Outage = x.now - c.firstMono
		n.Summary = fmt.Sprintf("connect() to %s timed out: %d SYN retransmission%s unanswered over %s (%s)",
			c.remote, c.synRetrans, plural(c.synRetrans), secs(n.Outage), errnoLabel(n.Errno))
		n.Explanation = fmt.Sprintf("No SYN-ACK and no RST came back: a black hole (host down, route missing, firewall dropping). The SYN RTO starts at 1 s (kernels from 6.18 keep it there for tcp_syn_linear_timeouts retries, then it doubles); tcp_syn_retries=%d is turned into a time budget of %s (tcp_model_timeout), after which connect() fails with %s.",
			s.SynRetries, secs(tcp.SynBudget(s.SynRetries, ev.RTOMax)), errnoLabel(n.Errno))
	}
}

func abortExplanation(reason string) string {
	switch reason {
	case "TCP_ABORT_ON_CLOSE":
		return "close() with unread data in the receive buffer: the kernel resets instead of sending FIN so the peer knows data was lost (RFC 2525)."
	case "TCP_ABORT_ON_LINGER":
		return "The socket lingered in FIN_WAIT2 longer than tcp_fin_timeout/TCP_LINGER2 allows."
	case "TCP_ABORT_ON_MEMORY":
		return "Too many orphaned sockets or TCP memory pressure: the kernel reset an orphan to free memory (tcp_max_orphans, tcp_mem)."
	case "TCP_STATE":
		return "An abortive close driven by the socket's state: SO_LINGER with a zero timeout, a disconnect, or a socket destroyed from outside (ss -K, SOCK_DESTROY)."
	case "TCP_DISCONNECT_WITH_DATA":
		return "connect(AF_UNSPEC) disconnected the socket with unsent or unread data."
	}
	return "The kernel sent an active reset (tcp_send_active_reset)."
}

// projectGiveUp simulates the retransmission timer from the last expiry:
// the kernel checks the budget only when the RTO fires, so death comes at
// the first expiry at or past first-retransmission + budget.
func projectGiveUp(first time.Duration, ev *figures, budget time.Duration) time.Duration {
	deadline := first + budget
	t, rto := ev.Mono, ev.RTO
	rtoMax := ev.RTOMax
	if rtoMax <= 0 {
		rtoMax = 120 * time.Second
	}
	doubling := !isUnreachable(ev.SkErrSoft)
	for i := 0; i < 256; i++ {
		if doubling {
			rto = min(2*rto, rtoMax)
		}
		next := t + rto
		if ev.Settings.UserTimeout > 0 && next > deadline {
			next = deadline // the kernel clamps the RTO to the user timeout
		}
		t = next
		if t >= deadline {
			return t
		}
	}
	return t
}

func isUnreachable(e int32) bool { return e == errEHOSTUNREACH || e == errENETUNREACH }

func expectedTimeoutErrno(ev *figures) string {
	if isUnreachable(ev.SkErrSoft) {
		return errnoLabel(ev.SkErrSoft)
	}
	return "ETIMEDOUT"
}

// budgetFormula spells out tcp_model_timeout() for these settings.
func budgetFormula(retries2 uint8, rtoMax time.Duration) string {
	if rtoMax <= 0 {
		rtoMax = 120 * time.Second
	}
	thresh := 0
	for r := rtoMax / (200 * time.Millisecond); r > 1; r >>= 1 {
		thresh++
	}
	if int(retries2) <= thresh {
		return fmt.Sprintf("%d × 200ms", (2<<retries2)-1)
	}
	return fmt.Sprintf("%d × 200ms + %d × %s", (2<<thresh)-1, int(retries2)-thresh, secs(rtoMax))
}

func rtoList(rtos []time.Duration) string {
	if len(rtos) == 0 {
		return "unknown"
	}
	parts := make([]string, 0, len(rtos))
	for i, r := range rtos {
		if len(rtos) > 8 && i >= 3 && i < len(rtos)-3 {
			if i == 3 {
				parts = append(parts, "…")
			}
			continue
		}
		parts = append(parts, secs(r))
	}
	return strings.Join(parts, " → ")
}

// secs prints a duration the way kernel documentation does: 200ms, 1.6s, 924.6s.
func secs(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + secs(-d)
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	default:
		return strconv.FormatFloat(float64(d.Milliseconds())/1000, 'f', -1, 64) + "s"
	}
}

func errnoLabel(e int32) string {
	if e == 0 {
		return "no error reported"
	}
	return fmt.Sprintf("%s (%d, %s)", tcp.ErrnoName(e), e, tcp.ErrnoText(e))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

var signals = map[int]string{1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT",
	7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM"}

func signalName(sig int) string {
	if n, ok := signals[sig]; ok {
		return n
	}
	return fmt.Sprintf("signal %d", sig)
}

// timeline renders the connection's steps for the narrative.
func (t *Tracker) timeline(c *conn) []Step {
	out := make([]Step, 0, len(c.steps)+1)
	if c.droppedSteps > 0 {
		out = append(out, Step{At: 0, Event: fmt.Sprintf("(%d earlier events not kept)", c.droppedSteps)})
	}
	for i := range c.steps {
		out = append(out, Step{At: c.steps[i].mono - c.firstMono, Event: t.stepText(&c.steps[i])})
	}
	return out
}

func (t *Tracker) stepText(s *step) string {
	switch s.kind {
	case wire.KindState:
		return s.old.String() + " -> " + s.state.String()
	case wire.KindRetransmit:
		kind := "retransmission"
		switch {
		case s.state == tcp.StateSynSent:
			kind = "SYN retransmission"
		case s.ca == tcp.CALoss:
			kind = "RTO retransmission"
		case s.ca == tcp.CARecovery:
			kind = "fast retransmission"
		}
		txt := kind + " #" + strconv.Itoa(int(s.retransmits)) + " (rto " + secs(time.Duration(s.rtoMs)*time.Millisecond) + ")"
		if s.detail != 0 {
			txt += " failed: " + tcp.ErrnoName(s.detail)
		}
		return txt
	case wire.KindSendReset:
		who := "sent RST"
		if s.flags&wire.FlagReplyReset != 0 {
			who = "sent RST in reply"
		}
		if r := t.cfg.ResetReasons.Name(s.detail); r != "" {
			return who + " (" + r + ")"
		}
		return who
	case wire.KindRecvReset:
		return "received RST in " + s.state.String()
	case wire.KindError:
		return "error reported: " + tcp.ErrnoName(s.detail)
	case wire.KindCongState:
		return "congestion state " + s.oldCA.String() + " -> " + s.ca.String()
	case wire.KindKeepalive:
		switch {
		case s.flags&wire.FlagKeepaliveKill != 0:
			return "keepalive timer gave up after " + strconv.Itoa(int(s.probes)) + " probes"
		case s.flags&wire.FlagProbeSent != 0:
			return "keepalive probe " + strconv.Itoa(int(s.probes)) + " sent"
		}
		return "keepalive probe answered"
	case wire.KindDestroy:
		return "socket destroyed"
	case wire.KindAppError:
		call := "recv"
		if s.flags&wire.FlagAppSend != 0 {
			call = "send"
		}
		return "application's " + call + "() failed: " + tcp.ErrnoName(s.detail)
	case wire.KindSnapshot:
		return "found at start-up in " + s.state.String()
	}
	return s.kind.String()
}
