package tracker

import (
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

func (t *Tracker) onRetransmit(c *conn, ev *wire.Event) {
	if ev.State == tcp.StateSynSent || ev.State == tcp.StateSynRecv {
		c.synRetrans = max(c.synRetrans+1, int(ev.Retransmits))
		return
	}
	if ev.CAState != tcp.CALoss && ev.Flags&wire.FlagFromTimer == 0 {
		return // fast retransmit or loss probe: routine
	}
	if c.timerExpired(ev) {
		t.narrate(c, Stalled, false, ev.Mono)
	}
}

// timerExpired notes an expiry of the retransmission timer in an outage;
// false for a retransmission that is not one.
func (c *conn) timerExpired(ev *wire.Event) bool {
	// The retransmission timer counts its expiries in icsk_retransmits. A
	// retransmission in Loss that counted none is not an expiry: the held
	// segment leaving after all, or the rest of the queue resent after an
	// ACK (the peer answers, nothing more went unanswered).
	if c.stallFirst != 0 && ev.Flags&wire.FlagFromTimer == 0 && ev.Retransmits == c.timerRetransmits {
		return c.heldSendLeft(ev)
	}
	if c.stallFirst == 0 {
		c.stallFirst = firstRetransmit(ev)
		// The peer went silent about one RTO before the first
		// retransmission (the original transmission), not at the last ACK
		// of an idle connection.
		c.silenceStart = c.stallFirst - firstRTO(ev)
		if acked := ev.Mono - ev.AckAge; ev.AckAge > 0 && acked > c.silenceStart {
			c.silenceStart = acked
		}
		c.stallRetrans = 0
		c.rtos = c.rtos[:0]
		c.retransStamp = c.stallFirst
		if failedSend(ev) {
			c.retransStamp = c.stallFirst - firstRTO(ev)
		}
	}
	c.stallRetrans++
	c.timerAt, c.timerRTO, c.timerRetransmits = ev.Mono, ev.RTO, ev.Retransmits
	c.timerSendFailed, c.restartAt, c.restartRTO = failedSend(ev), 0, 0
	if failedSend(ev) {
		c.failedSends, c.failedErrno = c.failedSends+1, -ev.Detail
	}
	if len(c.rtos) < 24 {
		c.rtos = append(c.rtos, ev.RTO)
	}
	return true
}

// heldSendLeft notes the retransmission that the latest expiry could not
// send leaving between two expiries, and says whether it moved the
// kernel's deadline. With the cable pulled, the attempt fails with -EBUSY:
// an earlier copy of the segment still waits in the neighbour entry's
// queue (skb_still_in_host_queue, which also sets TSQ_THROTTLED). When
// neighbour discovery fails, the entry frees what it queued; freeing that
// copy runs the TCP small queues handler (tcp_wfree, tcp_tsq_write), whose
// tcp_xmit_retransmit_queue sends the queue's head again, this time
// successfully (it waits in the new entry's queue), and, having sent the
// head, restarts the retransmission timer for a whole icsk_rto, the RTO
// already doubled by the expiry before (tcp_reset_xmit_timer). So the
// next expiry, where the budget is checked, comes that much later than
// the one the expiry had armed: 6.1 with IPv6 ends about the neighbour's
// 3 s after the original send plus an RTO, 1.1 to 1.4 s after a projection
// made at the last expiry (lab cable-pull-v6 in the 6.1 guest, where
// tcp:tcp_retransmit_skb fires for it and for no failed attempt). A
// retransmission after a successful expiry, or after the peer answered
// (the rest of the queue resent on its ACK, a cable put back), moves
// nothing the budget depends on.
func (c *conn) heldSendLeft(ev *wire.Event) bool {
	if !c.timerSendFailed || failedSend(ev) || ev.CAState != tcp.CALoss {
		return false
	}
	if acked := ev.Mono - ev.AckAge; ev.AckAge == 0 || acked > c.stallFirst {
		return false // the peer acknowledged something during the outage
	}
	c.timerSendFailed = false
	c.restartAt, c.restartRTO = ev.Mono, ev.RTO
	if n := len(c.steps); n > 0 && c.steps[n-1].mono == ev.Mono && c.steps[n-1].kind == wire.KindRetransmit {
		c.steps[n-1].resent = true
	}
	return true
}

// failedSend says whether an RTO retransmission never left this host.
// From 6.17 the tcp_retransmit_skb tracepoint says so with its error.
// Before, __tcp_retransmit_skb fires it only on success, so a record seen
// at the timer (wire.FlagFromTimer: icsk_retransmits grew, the tracepoint
// stayed silent) is an attempt that failed, its error unknown; with the
// cable pulled it is -EBUSY, the previous copy still waiting in the
// neighbour's queue (skb_still_in_host_queue). Either way the kernel
// stamps retrans_stamp with the segment's last send (tcp_retransmit_skb:
// "Save stamp of the first (attempted) retransmit", tcp_skb_timestamp of
// an skb that was not sent again), and the failed neighbour entry's ICMP
// can revert the backoff and end the connection early (tcp_ld_RTO_revert).
func failedSend(ev *wire.Event) bool {
	return ev.Detail != 0 || ev.Flags&wire.FlagFromTimer != 0
}

// firstRetransmit is when the outage's first RTO retransmission went out.
// Normally this event is it; when tcpwatch started mid-outage, walk back
// through the halving RTOs the kernel used before.
func firstRetransmit(ev *wire.Event) time.Duration {
	first := ev.Mono
	rto := ev.RTO
	for i := 1; i < int(ev.Retransmits); i++ {
		rto /= 2
		first -= rto
	}
	return first
}

// firstRTO is the RTO that expired to send the first retransmission.
func firstRTO(ev *wire.Event) time.Duration {
	rto := ev.RTO
	for i := 1; i < int(ev.Retransmits); i++ {
		rto /= 2
	}
	return rto
}

// onCongState ends the outage when the kernel leaves its loss state: the
// peer acknowledged what was retransmitted.
func (t *Tracker) onCongState(c *conn, ev *wire.Event) {
	if ev.OldCA == tcp.CALoss && ev.CAState != tcp.CALoss && c.stallFirst != 0 {
		t.narrate(c, Recovered, false, ev.Mono)
		c.endStall()
	}
}

func (c *conn) endStall() {
	c.stallFirst, c.silenceStart, c.stallRetrans, c.failedSends = 0, 0, 0, 0
	c.timerAt, c.timerRTO, c.timerRetransmits = 0, 0, 0
	c.timerSendFailed, c.restartAt, c.restartRTO = false, 0, 0
	c.drops.reset()
	c.rtos = c.rtos[:0]
}
