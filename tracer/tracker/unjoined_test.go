package tracker

import (
	"testing"

	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Once the kernel refused to mark a connection in trouble (its table of
// them full: DropsUnjoined), a connection tracked then claims no drops,
// neither those joined to it nor that its packets left this host; one
// tracked only afterwards still does.
func TestUnjoinedDropsAreNotClaimed(t *testing.T) {
	rec := loadRecording(t, "firewall-drops-replies")
	tell := func(unjoinAfterFirstRetransmit bool) []Narrative {
		var got []Narrative
		tr := New(Config{ResetReasons: testReasons, DropsSeen: true, DropReasons: testDropReasons}, func(n *Narrative) {
			got = append(got, *n)
		})
		unjoined := false
		for i := range rec.events {
			tr.Handle(&rec.events[i])
			if unjoinAfterFirstRetransmit && !unjoined && rec.events[i].Kind == wire.KindRetransmit {
				tr.DropsUnjoined()
				unjoined = true
			}
		}
		tr.Flush(rec.events[len(rec.events)-1].Mono + 1e9)
		return got
	}
	joined := 0
	for _, n := range tell(false) {
		if n.Unjoined {
			t.Errorf("%s: unjoined with no skip", n.Verdict)
		}
		joined += len(n.Drops)
	}
	if joined == 0 {
		t.Fatal("the recording's narratives join no drop: nothing to test")
	}
	checked := 0
	for _, n := range tell(true) {
		if n.Retransmits == 0 && n.WindowProbes == 0 {
			continue
		}
		checked++
		if !n.Unjoined || n.DropsSeen || len(n.Drops) != 0 || n.LeftHost != 0 {
			t.Errorf("%s after a refused mark: unjoined %v, drops seen %v, drops %v, left host %d",
				n.Verdict, n.Unjoined, n.DropsSeen, n.Drops, n.LeftHost)
		}
	}
	if checked == 0 {
		t.Fatal("no narrative of an episode after the skip: nothing checked")
	}
	t.Logf("%d drops joined without a skip; %d narratives of an episode after one claim none", joined, checked)
}
