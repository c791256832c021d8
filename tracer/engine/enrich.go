package engine

import "github.com/tcpwatch/tcpwatch/tracer/tracker"

// enrich adds to an item what the engine knows around the tracker's
// facts, once, before the filter and any stage see it: the kernel's names
// for reset reasons, and what the connection's cgroup names (path,
// container, pod). The owner is the tracker's to find (it knows which
// sockets no process holds any more); the engine lends it the /proc index.
func (e *Engine) enrich(it *Item) {
	it.ResetReasons = e.src.ResetReasons()
	if id := it.cgroupID(); id != 0 {
		it.Cgroup = e.cfg.Cgroups.Lookup(id)
	}
	if n := it.Narrative; n != nil && n.Verdict == tracker.LocalPortsExhausted {
		e.fillPortUse(n)
	}
}
