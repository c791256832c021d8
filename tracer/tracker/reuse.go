package tracker

// Reusing told narratives (Config.ReuseNarratives). With --all every end
// of every connection is a narrative, and a narrative and its timeline
// were half of the memory the tracker allocated per record (about 1 KiB
// an end, BenchmarkReplayAll): fresh memory each time, for the collector
// to sweep and the cache to miss. Once told, a narrative's struct and its
// timeline's array serve the next one. RTOs, Drops and PeerEnd are made
// afresh for each narrative that has them (a failure's, rarely), so a
// sink may keep those.

// maxFreeNarratives bounds the narratives kept for reuse: more than wait
// out the grace period at a busy host's rate are not needed again soon.
const maxFreeNarratives = 1024

// newNarrative returns a zero narrative, with a told one's timeline array
// to fill when there is one to reuse: the one told longest ago. Every
// narrative waits out the grace period, long enough under churn to leave
// the cache, so none is warm when told; taken oldest first, they are
// narrated, held and told in one order that repeats, which the memory's
// prefetching follows (the latest told, taken first, left them in an
// order of their own: BenchmarkReplayAll/summary/short 6-8% slower).
func (t *Tracker) newNarrative() *Narrative {
	var n *Narrative
	if t.freeHead < len(t.freeNarratives) {
		n = t.freeNarratives[t.freeHead]
		t.freeNarratives[t.freeHead] = nil
		t.freeHead++
	} else {
		n = new(Narrative)
	}
	*n = Narrative{Timeline: n.Timeline[:0]}
	return n
}

// takeFree takes the latest of free (the warmest in the cache), or a new
// one when there is none.
func takeFree[T any](free *[]*T) *T {
	k := len(*free)
	if k == 0 {
		return new(T)
	}
	v := (*free)[k-1]
	(*free)[k-1] = nil
	*free = (*free)[:k-1]
	return v
}

// told takes back a narrative emit has returned from, when the
// narratives are reused, to be taken after those already waiting.
func (t *Tracker) told(n *Narrative) {
	if t.cfg.ReuseNarratives && len(t.freeNarratives)-t.freeHead < maxFreeNarratives {
		if t.freeHead > 0 && len(t.freeNarratives) == cap(t.freeNarratives) {
			k := copy(t.freeNarratives, t.freeNarratives[t.freeHead:])
			clear(t.freeNarratives[k:])
			t.freeNarratives, t.freeHead = t.freeNarratives[:k], 0
		}
		t.freeNarratives = append(t.freeNarratives, n)
	}
}

// Reusing removed connections' entries. With --all every end is an entry
// of about 1 KiB, made at its first record and removed at its destroy:
// fresh memory for every end, the largest of the tracker's allocations.
// An entry is reused only once nothing can reach it any more: removed
// (remove), with no entry left in the closing queue (queued), and never
// held by a fold of connect() failures or the window probes (pinned). A
// removed entry waits in t.removed until the next new entry is made, so
// that what the record being handled still does with it (remove comes in
// the middle of some hooks) is over by then.

// maxFreeConns bounds the entries kept for reuse, and those waiting.
const maxFreeConns = 4096

// newConn returns a zero entry.
func (t *Tracker) newConn() *conn {
	for _, c := range t.removed {
		if c.queued == 0 && !c.pinned && !c.free && c.prev == nil && len(t.freeConns) < maxFreeConns {
			c.free = true
			t.freeConns = append(t.freeConns, c)
		}
	}
	clear(t.removed)
	t.removed = t.removed[:0]
	c := takeFree(&t.freeConns)
	*c = conn{}
	return c
}

// ReleaseReusable lets go of the entries and narratives kept for reuse,
// and of the room the narratives waiting out the grace period no longer
// need, for the collector to take: after a storm, before memory is handed
// back.
func (t *Tracker) ReleaseReusable() {
	clear(t.freeNarratives)
	clear(t.freeConns)
	t.freeNarratives, t.freeConns, t.freeHead = nil, nil, 0
	t.pending.shrink()
}

// removed takes an entry remove took out, or one the closing queue let go
// of after its removal.
func (t *Tracker) removedConn(c *conn) {
	if c.queued == 0 && !c.pinned && len(t.removed) < maxFreeConns {
		t.removed = append(t.removed, c)
	}
}
