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
		c.probes = int(ev.ProbesOut)
		// A healthy peer answers the first probe at once: only a second
		// probe (the first went unanswered a whole interval) is news.
		if c.probes >= 2 {
			c.kaAnnounced = true
			t.narrate(c, KeepaliveProbing, false, ev.Mono)
		}
	case ev.Flags&wire.FlagProbeAnswered != 0:
		if c.kaAnnounced {
			t.narrate(c, Recovered, false, ev.Mono)
		}
		c.probes, c.probeSince, c.kaAnnounced = 0, 0, false
	}
}
