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
	// retransmission in Loss that counted none resends the rest of the
	// queue after an ACK: the peer answers, nothing more went unanswered,
	// and the kernel's deadline has not moved.
	if c.stallFirst != 0 && ev.Flags&wire.FlagFromTimer == 0 && ev.Retransmits == c.timerRetransmits {
		return false
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
	if failedSend(ev) {
		c.failedSends, c.failedErrno = c.failedSends+1, -ev.Detail
	}
	if len(c.rtos) < 24 {
		c.rtos = append(c.rtos, ev.RTO)
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
	c.drops.reset()
	c.rtos = c.rtos[:0]
}
