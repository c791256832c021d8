package tracker

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// TellEveryRecording feeds the engine's churn recordings and every
// recorded scenario (as recorded and summarised) to an --all tracker that
// holds normal ends compact (held.go) or, with holdWhole, whole, and hands
// each narrative told to emit with the recording's name.
func TellEveryRecording(t *testing.T, holdWhole bool, emit func(name string, n *Narrative)) {
	type stream struct {
		name           string
		evs            []wire.Event
		closeWaitAfter time.Duration
	}
	streams := []stream{{name: "churn summarised", evs: churnSummary(t)},
		{name: "churn", evs: churnRecording(t, "../engine/testdata/churn200.rec.gz")}}
	files, err := filepath.Glob("testdata/*.hex")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recordings: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".hex")
		rec := loadRecording(t, name)
		streams = append(streams, stream{name, rec.events, rec.closeWaitAfter},
			stream{name + " summarised", summarise(rec.events), rec.closeWaitAfter})
	}
	for _, s := range streams {
		tr := New(Config{All: true, ReuseNarratives: true, ResetReasons: testReasons, CloseWaitAfter: s.closeWaitAfter,
			DropsSeen: true, DropReasons: testDropReasons, Owners: &loggedOwners{log: new([]uint32)}},
			func(n *Narrative) { emit(s.name, n) })
		tr.holdWhole = holdWhole
		var last time.Duration
		for i := range s.evs {
			ev := s.evs[i]
			tr.Handle(&ev)
			last = max(last, ev.Mono)
		}
		tr.Flush(last + time.Second)
	}
}
