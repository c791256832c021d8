package tracker

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// Narratives told with ReuseNarratives are the ones told without it, in
// every recorded scenario (with --all: every end a narrative), and the
// tracker does reuse them: a narrative kept beyond emit (here, on purpose)
// is seen again with another story.
func TestReuseNarrativesTellsTheSame(t *testing.T) {
	files, err := filepath.Glob("testdata/*.hex")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recordings: %v", err)
	}
	reused := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".hex")
		rec := loadRecording(t, name)
		tell := func(reuse bool) ([]Narrative, map[*Narrative]int) {
			var told []Narrative
			seen := map[*Narrative]int{}
			tr := New(Config{All: true, ReuseNarratives: reuse, ResetReasons: testReasons, CloseWaitAfter: rec.closeWaitAfter,
				DropsSeen: true, DropReasons: testDropReasons}, func(n *Narrative) {
				cp := *n
				cp.Timeline = slices.Clone(n.Timeline)
				told = append(told, cp)
				seen[n]++
			})
			var last time.Duration
			for i := range rec.events {
				tr.Handle(&rec.events[i])
				last = rec.events[i].Mono
			}
			tr.Flush(last + time.Second)
			return told, seen
		}
		fresh, _ := tell(false)
		again, seen := tell(true)
		if !reflect.DeepEqual(fresh, again) {
			for i := range min(len(fresh), len(again)) {
				if !reflect.DeepEqual(fresh[i], again[i]) {
					t.Fatalf("%s: narrative %d differs with reuse:\n%+v\nwithout:\n%+v", name, i, again[i], fresh[i])
				}
			}
			t.Fatalf("%s: %d narratives with reuse, %d without", name, len(again), len(fresh))
		}
		for _, n := range seen {
			reused += n - 1
		}
	}
	if reused == 0 {
		t.Error("no narrative was reused")
	}
}
