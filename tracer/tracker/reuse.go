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
// to fill when there is one to reuse.
func (t *Tracker) newNarrative() *Narrative {
	k := len(t.freeNarratives)
	if k == 0 {
		return &Narrative{}
	}
	n := t.freeNarratives[k-1]
	t.freeNarratives[k-1] = nil
	t.freeNarratives = t.freeNarratives[:k-1]
	*n = Narrative{Timeline: n.Timeline[:0]}
	return n
}

// told takes back a narrative emit has returned from, when the
// narratives are reused.
func (t *Tracker) told(n *Narrative) {
	if t.cfg.ReuseNarratives && len(t.freeNarratives) < maxFreeNarratives {
		t.freeNarratives = append(t.freeNarratives, n)
	}
}
