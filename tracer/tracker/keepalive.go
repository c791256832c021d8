package tracker

import (
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

func (t *Tracker) onKeepalive(c *conn, ev *wire.Event) {
	switch {
	case ev.Flags&wire.FlagKeepaliveKill != 0:
		c.kaKilled = true
		c.probes = max(c.probes, int(ev.ProbesOut))
		if c.probeSince == 0 {
			c.probeSince = ev.Mono - ev.AckAge
		}
		if c.closing {
			t.finalize(c, c.closeMono)
		}
	case ev.Flags&wire.FlagProbeSent != 0:
		if c.probes == 0 || c.probeSince == 0 {
			// The first probe went out keepalive_time after the last ACK.
			c.probeSince = ev.Mono - ev.AckAge
		}
		c.probes, c.probeAt = int(ev.ProbesOut), ev.Mono
		// A healthy peer answers the first probe at once: only a second
		// probe (the first went unanswered a whole interval) is news.
		if c.probes >= 2 {
			c.kaAnnounced = true
			t.narrate(c, KeepaliveProbing, false, ev.Mono)
		}
	case ev.Flags&wire.FlagProbeAnswered != 0:
		// The timer notices the answer at its next run, up to an
		// interval later: the answer came at the peer's last ACK.
		c.answeredAt = ev.Mono
		if ev.AckAge > 0 && ev.Mono-ev.AckAge > c.probeSince {
			c.answeredAt = ev.Mono - ev.AckAge
		}
		if c.kaAnnounced {
			t.narrate(c, Recovered, false, ev.Mono)
		}
		c.probes, c.probeSince, c.probeAt, c.kaAnnounced = 0, 0, 0, false
	}
}
