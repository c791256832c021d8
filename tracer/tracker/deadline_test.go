package tracker

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// A window-probe stall whose kill never reached tcpwatch (a real run of the
// lab, testdata/firewall-drops-own-end-unseen.hex): past the kernel's
// deadline the tracker asks for the socket table instead of telling
// recovered, and the table decides.
func TestEndUnseenAfterDeadline(t *testing.T) {
	rec := loadRecording(t, "firewall-drops-own-end-unseen")
	for _, tc := range []struct {
		name  string
		alive bool
		want  Verdict
	}{{"gone", false, RetransmitTimeout}, {"alive", true, Recovered}} {
		t.Run(tc.name, func(t *testing.T) {
			var got []Narrative
			tr := New(Config{ResetReasons: testReasons, DropsSeen: true, DropReasons: testDropReasons}, func(n *Narrative) {
				if rec.hostOf[n.NetNS] == "A" {
					got = append(got, *n)
				}
			})
			var last time.Duration
			for i := range rec.events {
				tr.Handle(&rec.events[i])
				last = rec.events[i].Mono
			}
			// Well past the kill (about 0.2 s after the last record) and the
			// probe timer's next expiry after it.
			now := last + 5*time.Second
			tr.Tick(now)
			if !tr.WantsReconcile() {
				t.Fatal("silent past the deadline, the tracker did not ask for the socket table")
			}
			if tr.WantsReconcile() {
				t.Error("WantsReconcile said yes twice for one silence")
			}
			for _, n := range got {
				if n.Verdict != Stalled {
					t.Fatalf("told %s before the socket table was read", n.Verdict)
				}
			}
			tr.Reconcile(now, now, func(uint32, uint64, netip.AddrPort, netip.AddrPort) bool { return tc.alive })
			tr.Tick(now + time.Second)
			if len(got) == 0 || got[len(got)-1].Verdict != tc.want {
				t.Fatalf("told %v, want %s last", verdictsOf(got), tc.want)
			}
			n := got[len(got)-1]
			switch tc.want {
			case RetransmitTimeout:
				if !n.Final || !n.EndUnseen || tcp.ErrnoName(n.Errno) != "ETIMEDOUT" || n.WindowProbes != 3 || n.LostRecords {
					t.Errorf("final=%v end_unseen=%v errno=%s window probes %d lost_records=%v", n.Final, n.EndUnseen, tcp.ErrnoName(n.Errno), n.WindowProbes, n.LostRecords)
				}
			case Recovered:
				if n.Final || n.EndUnseen || n.WindowProbes != 3 {
					t.Errorf("final=%v end_unseen=%v window probes %d", n.Final, n.EndUnseen, n.WindowProbes)
				}
			}
		})
	}
}
