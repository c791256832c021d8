package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"syscall"
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
			cmd := tcpwatch(t, "-o", "json")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitRunning(t, cmd.Process.Pid)
			res, err := lab.Run(context.Background(), tc.scenario, lab.Options{}, func(lab.Record) {})
			time.Sleep(300 * time.Millisecond)
			cmd.Process.Signal(syscall.SIGINT)
			if werr := cmd.Wait(); werr != nil {
				t.Errorf("tcpwatch: %v: %s", werr, stderr.String())
			}
			if err != nil || !res.OK {
				t.Fatalf("lab: %v %+v", err, res)
			}
			var told []narrativeJSON
			for _, n := range testkit.JSONLines(stdout.String(), func(n narrativeJSON) bool {
				return n.Type == "narrative" && n.Verdict == "synack_unanswered"
			}) {
				if slices.Contains(res.NetNS["B"], n.NetNS) {
					told = append(told, n)
				}
			}
			if len(told) == 0 {
				t.Fatalf("no synack_unanswered for B; tcpwatch said:\n%s", stdout.String())
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
