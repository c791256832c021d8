package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/lab"
)

// The tcpwatch command, JSON, while the lab's handshakes go unanswered:
// B's listener is told as synack_unanswered with its cause, the
// SYN-ACKs, the clients and (under a SYN flood) the namespace's cookies,
// all of its lines one incident.
func TestSynackUnansweredEndToEnd(t *testing.T) {
	testkit.RequirePrivileged(t)
	for _, tc := range []struct {
		scenario, cause string
		cookies         bool
	}{
		{"clients-vanish-after-syn", "handshakes_unanswered", false},
		{"syn-flood-cookies-v6", "syn_flood", true},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			w := startWatcher(t, "-o", "json")
			waitRunning(t, w.cmd.Process.Pid)
			// tcpwatch reads the listeners once a second, in its own
			// rhythm, not the lab's: under qemu's TCG its line for B can
			// come after the lab's own tracer told it, so the lab keeps B
			// until then.
			toldForB := func(out string, netns []uint32) (told []narrativeJSON) {
				for _, n := range testkit.JSONLines(out, func(n narrativeJSON) bool {
					return n.Type == "narrative" && n.Verdict == "synack_unanswered"
				}) {
					if slices.Contains(netns, n.NetNS) {
						told = append(told, n)
					}
				}
				return told
			}
			waitForB := func(res *lab.Result) {
				for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
					if len(toldForB(w.stdout.String(), res.NetNS["B"])) > 0 {
						return
					}
				}
			}
			res, err := lab.Run(context.Background(), tc.scenario, lab.Options{BeforeTeardown: waitForB}, func(lab.Record) {})
			if err != nil || !res.OK {
				w.stop(t)
				t.Fatalf("lab: %v %+v", err, res)
			}
			out := w.stop(t)
			told := toldForB(out, res.NetNS["B"])
			if len(told) == 0 {
				t.Fatalf("no synack_unanswered for B within 20s of the lab's result; tcpwatch said:\n%s", out)
			}
			n := told[0]
			t.Logf("%s", n.Summary)
			l := n.Listener
			if l == nil || l.Cause != tc.cause || l.SynackClients < 1 || l.SynackRetransmits < l.SynackClients ||
				n.State != "LISTEN" || n.LPort != 8080 || n.IncidentID == "" || (tc.cookies && l.CookiesSent < 1) ||
				(l.Syncookies == nil) || !strings.Contains(n.Summary, "call the") {
				t.Errorf("synack_unanswered: %+v listener %+v", n.NarrativeRecord, l)
			}
			for _, o := range told {
				if o.IncidentID != n.IncidentID {
					t.Errorf("incident ids %q and %q: want one per listener", n.IncidentID, o.IncidentID)
				}
			}
		})
	}
}
