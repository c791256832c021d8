package tracker

import (
	"net/netip"
	"time"
)

// Alive says whether the kernel still has a connection's socket: by its
// cookie, or by its 4-tuple in its namespace when the tracker never learned
// the cookie. An oracle that cannot tell (its namespace could not be read)
// must answer true: only a socket known to be gone is dropped.
type Alive func(netns uint32, cookie uint64, local, remote netip.AddrPort) bool

// Reconcile drops the connections the kernel no longer has. When the
// records of a socket's end (its CLOSE, its destroy) are lost, nothing else
// would ever remove its entry: after a loss storm the tracker would hold
// hundreds of thousands of dead connections, and evicting them would look
// like evicting live ones.
//
// asOf is the kernel time (CLOCK_MONOTONIC) at which the oracle's table was
// read; the caller must have handed the tracker every record written before
// it. A connection with an event at or after asOf is kept: its socket may
// have been made after the table was read. A connection whose end is being
// told (closing, within the grace period) is left to finish.
//
// A dropped connection that was in an episode (stalled, keepalive_probing)
// gets a final narrative, verdict untold (LostRecords when the kernel
// counted lost records while it was tracked): the person who saw it stall
// learns that it is gone and that its end was not seen.
// Others are dropped silently and counted (Stats.Reconciled).
func (t *Tracker) Reconcile(asOf, now time.Duration, alive Alive) (dropped int) {
	for c := t.lru.prev; c != &t.lru; {
		prev := c.prev
		switch {
		case c.closing && !c.done:
		case c.last.Mono >= asOf || c.firstMono >= asOf:
		case alive(c.netns, c.cookie, c.local, c.remote):
			if c.overdue && !c.done {
				// Silent past the deadline and alive: for window
				// probes, an answer stopped the probe timer; a
				// stall's or keepalive's next record will tell.
				c.overdue = false
				t.endWindowProbe(c, now)
			}
		default:
			if !c.done && (c.stallFirst != 0 || c.kaAnnounced || c.window.announced) {
				v := Untold
				if c.pastDeadline(asOf) {
					// Gone after the kernel's deadline: the kernel's end.
					v = c.endAtDeadline()
				}
				c.done, c.closing = true, false
				// LostRecords says whether the kernel counted records
				// lost while it was tracked: the words claim no loss
				// the counters did not see.
				t.narrate(c, v, true, max(now, c.last.Mono))
				// Its final is told: a record of its end read after all
				// (the kernel wrote it late) tells nothing more.
				t.rememberGone(c.cookie, max(now, c.last.Mono))
			}
			c.done = true
			t.remove(c)
			t.reconciled++
			if !t.cfg.All && c.onlyFoundAtStartup() {
				t.unseen++
			}
			dropped++
		}
		c = prev
	}
	return dropped
}

// onlyFoundAtStartup says whether all the tracker knows of c is the
// sock_diag entry of start-up: in default mode the kernel keeps no storage
// for a healthy connection it did not see begin, so it never reports its
// end.
func (c *conn) onlyFoundAtStartup() bool {
	if c.droppedSteps > 0 || len(c.steps) == 0 {
		return false
	}
	for i := range c.steps {
		if !c.steps[i].existing {
			return false
		}
	}
	return true
}

// NetNS lists the network namespaces of the connections tracked: the ones
// whose socket tables Reconcile needs.
func (t *Tracker) NetNS() []uint32 {
	seen := map[uint32]bool{}
	var out []uint32
	for c := t.lru.next; c != &t.lru; c = c.next {
		if !seen[c.netns] {
			seen[c.netns] = true
			out = append(out, c.netns)
		}
	}
	return out
}
