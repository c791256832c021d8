package output

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/tcpwatch/tcpwatch/output/communityid"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// Both ends of one connection tell their own story (the lab's
// process-crash: A sees its peer close, B its process exit); their
// records must join on community_id, and only with the same seed.
func TestCommunityIDJoinsBothEnds(t *testing.T) {
	a := replayFor(t, "process-crash", "A", tracker.PeerClosed, false)
	b := replayFor(t, "process-crash", "B", tracker.LocalProcessExited, false)
	if a.Local != b.Remote || a.Remote != b.Local {
		t.Fatalf("not one connection: A %v -> %v, B %v -> %v", a.Local, a.Remote, b.Local, b.Remote)
	}
	line := func(n *tracker.Narrative, seed uint16) (rec NarrativeRecord) {
		var buf bytes.Buffer
		if err := NewWriter(&buf, JSON, Options{CommunityIDSeed: seed}).Narrative(n, containers.Info{}); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	ra, rb := line(a, 0), line(b, 0)
	if ra.CommunityID == "" || ra.CommunityID != rb.CommunityID {
		t.Fatalf("community_id: A %q, B %q: want the same, not empty", ra.CommunityID, rb.CommunityID)
	}
	if want := communityid.Flow(0, communityid.TCP, a.Local, a.Remote); ra.CommunityID != want {
		t.Errorf("community_id %q, want %q", ra.CommunityID, want)
	}
	sa, sb := line(a, 1), line(b, 1)
	if sa.CommunityID != sb.CommunityID || sa.CommunityID == ra.CommunityID {
		t.Errorf("seed 1: A %q, B %q (seed 0 gave %q): want equal to each other, different from seed 0", sa.CommunityID, sb.CommunityID, ra.CommunityID)
	}
}
