package tracker

import "time"

// A connection found at start-up is told as of the moment its socket table
// was read (Existing.ReadAt). The ring buffer can still hold records the
// kernel wrote before that moment, its end among them: a dump that read
// the socket while its final timeout was being decided, or a slow start-up
// between the reading and the first record read. Its end, dated earlier,
// then comes after the import's narrative, which would be told after the
// final (seen: stalled 0.58 s after retransmit_timeout). The kernel's
// record of the end wins: what the import said of a later moment is not
// told.

// imported says whether the connection was found at start-up.
func (c *conn) imported() bool {
	for i := range c.steps {
		if c.steps[i].existing {
			return true
		}
	}
	return false
}

// refuseAfterEnd drops the narratives of c still waiting out the grace
// that are dated after its end, for a connection found at start-up.
func (t *Tracker) refuseAfterEnd(c *conn, end time.Duration) {
	if !c.imported() {
		return
	}
	t.pending.DropIf(func(at time.Duration, n *Narrative) bool {
		return at > end && !n.Final && n.Cookie == c.cookie && n.NetNS == c.netns && n.Local == c.local && n.Remote == c.remote
	})
}
