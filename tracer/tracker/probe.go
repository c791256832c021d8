package tracker

import (
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// ZeroWindow is the episode of a connection whose peer keeps answering
// with a closed receive window: its application stopped reading. The
// kernel probes the window (tcp_probe_timer) and each answer resets
// icsk_probes_out, so the probes never add up to tcp_retries2: only
// TCP_USER_TIMEOUT ends it.
const ZeroWindow Verdict = "zero_window"

// WindowFacts describe an episode of the zero-window probe timer
// (ICSK_TIME_PROBE0): data waits to be sent and nothing is in flight,
// because the peer's window is closed or because every send fails here.
type WindowFacts struct {
	// WindowProbes counts the probe timer's expiries that sent (or tried
	// to send) a probe in this episode; ProbesAnswered those the peer
	// answered (an ACK reset icsk_probes_out before the next expiry).
	WindowProbes   int
	ProbesAnswered int
	// PeerWindow is the window the peer last advertised, in bytes: 0 is
	// closed. NotSent is what the application wrote that waits.
	PeerWindow uint32
	NotSent    uint32
	// Endless: the kernel will never end the episode by itself (answered
	// probes, no TCP_USER_TIMEOUT): GiveUpIn is then 0.
	Endless bool
}

// windowProbe is a connection's probe-timer episode.
type windowProbe struct {
	first        time.Duration // when the data started waiting (one interval before the first expiry)
	firstExpiry  time.Duration // the first expiry: the kernel's icsk_probes_tstamp
	last         time.Duration // the latest expiry
	next         time.Duration // the next expiry, if nothing changes
	base         time.Duration // the probe interval before backoff (icsk_rto, at least TCP_RTO_MIN)
	backoff      uint8         // icsk_backoff after the latest expiry
	sent         int
	answered     int
	unanswered   int // icsk_probes_out after the latest expiry
	answeredLast bool
	sndWnd       uint32
	notSent      uint32
	told         time.Duration // the episode last narrated (its first)
	announced    bool
}

// probeBackoffCap is ilog2(TCP_RTO_MAX / TCP_RTO_MIN) + 1: tcp_probe0_when
// shifts the base by at most this much.
const probeBackoffCap = 10

func probeInterval(base time.Duration, backoff uint8, rtoMax time.Duration) time.Duration {
	return min(base<<min(backoff, probeBackoffCap), rtoMax)
}

// onProbe0 follows the probe timer: every expiry that counted a probe,
// and the one that found nothing left to probe.
func (t *Tracker) onProbe0(c *conn, ev *wire.Event) {
	if c.closing {
		// The run that killed the socket, read after its CLOSE (or its
		// error report, when the kernel skipped the CLOSE's program): an
		// episode does not go on after the end.
		return
	}
	w := &c.window
	if ev.ProbesOut == 0 {
		// tcp_send_probe0 found data in flight or nothing to send: the
		// data left, the episode is over.
		t.endWindowProbe(c, ev.Mono)
		return
	}
	rtoMax := ev.RTOMax
	if rtoMax <= 0 {
		rtoMax = tcp.RTOMaxDefault
	}
	base := max(ev.RTO, tcp.RTOMin)
	if w.sent == 0 {
		// The timer was armed one interval ago, when the data could not go.
		w.first = ev.Mono - probeInterval(base, ev.Backoff-min(ev.Backoff, 1), rtoMax)
		w.firstExpiry = ev.Mono
		if t.probing == nil {
			t.probing = make(map[*conn]struct{})
		}
		t.probing[c], c.pinned = struct{}{}, true
	}
	w.sent++
	w.answeredLast = ev.ProbesBefore == 0 && w.sent > 1
	if w.answeredLast {
		w.answered++
	}
	w.unanswered = int(ev.ProbesOut)
	w.sndWnd, w.notSent = ev.SndWnd, ev.NotSent
	w.base, w.backoff, w.last = base, ev.Backoff, ev.Mono
	w.next = ev.Mono + probeInterval(base, ev.Backoff, rtoMax)
	switch {
	case w.unanswered >= stallProbes(ev.SndWnd):
		w.announced = true
		t.narrate(c, Stalled, false, ev.Mono)
	case w.answeredLast && ev.SndWnd == 0:
		w.announced = true
		t.narrate(c, ZeroWindow, false, ev.Mono)
	}
}

// endWindowProbe ends c's probe-timer episode: told as recovered if it
// was told at all.
func (t *Tracker) endWindowProbe(c *conn, now time.Duration) {
	if c.window.sent == 0 {
		return
	}
	if c.window.announced && !c.done {
		t.narrate(c, Recovered, false, now)
	}
	c.window = windowProbe{}
	c.drops.reset()
	delete(t.probing, c)
}

// expireWindowProbes ends the probe episodes whose timer stopped: the
// probe timer always runs again unless the kernel cancelled it, which an
// ACK that opens the window does (tcp_ack_probe) without any record.
// Closed sockets end their episode through their own records.
func (t *Tracker) expireWindowProbes(now time.Duration) {
	for c := range t.probing {
		w := &c.window
		switch {
		case c.done || c.prev == nil || w.sent == 0:
			delete(t.probing, c)
		case now > w.next+(w.next-w.last)+time.Second:
			if c.pastDeadline(now) {
				// Silent past the kernel's deadline: killed or answered,
				// only the socket table can say (deadline.go).
				delete(t.probing, c)
				c.overdue, t.checkWanted = true, true
				continue
			}
			t.endWindowProbe(c, now)
		}
	}
}

// stallProbes is how many probes in a row must go unanswered to call the
// episode a stall. A healthy peer answers the first probe: two unanswered
// (or dropped here) is a stall. Against a closed window the probe is an
// old sequence number, which the peer answers with a duplicate ACK no
// more than once per tcp_invalid_ratelimit (500 ms): the first, short
// intervals may go unanswered by a live peer, so one more is needed.
func stallProbes(sndWnd uint32) int {
	if sndWnd == 0 {
		return 3
	}
	return 2
}

// windowVerdict is the episode verdict of c's probe-timer episode, "" if
// it is not one that was told.
func (c *conn) windowVerdict() Verdict {
	switch {
	case !c.window.announced:
		return ""
	case c.window.unanswered >= stallProbes(c.window.sndWnd):
		return Stalled
	}
	return ZeroWindow
}

// windowFacts fills n with c's probe-timer episode, when it has one and
// no retransmission episode explains it better.
func (c *conn) windowFacts(n *Narrative, now time.Duration) {
	w := &c.window
	if w.sent == 0 || c.stallFirst != 0 {
		return
	}
	n.WindowProbes, n.ProbesAnswered = w.sent, w.answered
	n.PeerWindow, n.NotSent = w.sndWnd, w.notSent
	n.Outage = now - w.first
	switch n.Verdict {
	case Stalled, ZeroWindow:
	case Recovered:
		return
	default:
		return // a final verdict: the counts and the time tell it
	}
	n.Begins, w.told = w.told != w.first, w.first
	n.Retransmits, n.RTOs = 0, nil
	s := c.last.Settings
	rtoMax := c.last.RTOMax
	if rtoMax <= 0 {
		rtoMax = tcp.RTOMaxDefault
	}
	var giveUp time.Duration
	bounded := true
	if n.Verdict == ZeroWindow {
		// Answered probes reset icsk_probes_out: tcp_retries2 is never reached.
		bounded = false
	} else {
		// The kernel kills at the expiry that finds probes_out >= tcp_retries2.
		at, b := w.last, w.backoff
		for i := 0; i <= int(s.Retries2)-w.unanswered; i++ {
			at += probeInterval(w.base, b, rtoMax)
			if b < s.Retries2 {
				b++
			}
		}
		giveUp = at
		n.Budget = Budget{Limit: at - w.firstExpiry, Setting: "tcp_retries2", Value: int(s.Retries2)}
	}
	if s.UserTimeout > 0 {
		// Measured from the first expiry (icsk_probes_tstamp), answered or not.
		at := w.firstExpiry + s.UserTimeout
		if !bounded || at < giveUp {
			giveUp = at
			n.Budget = Budget{Limit: s.UserTimeout, Setting: "TCP_USER_TIMEOUT", Value: int(s.UserTimeout.Milliseconds())}
		}
		bounded = true
	}
	if !bounded {
		n.Endless, n.GiveUpIn, n.Budget = true, 0, Budget{}
		return
	}
	n.GiveUpIn = max(giveUp-now, 0)
}
