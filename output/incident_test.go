package output

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

func testIncident(phase incident.Phase) *incident.Incident {
	t0 := time.Date(2026, 12, 4, 3, 12, 4, 0, time.UTC)
	ex := &tracker.Narrative{Time: t0.Add(15 * time.Minute), Verdict: tracker.RetransmitTimeout, Final: true,
		Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.5:5432"),
		Errno: int32(unix.ETIMEDOUT), Retransmits: 15, Outage: 15 * time.Minute, RTOs: []time.Duration{200 * time.Millisecond}}
	inc := &incident.Incident{ID: "ab12cd-1", Phase: phase, Time: t0.Add(15 * time.Minute), Onset: t0, NetNS: 4026531840,
		Peer: netip.MustParseAddr("10.0.0.5"), Port: 5432, Connections: 2000, Failed: 2000,
		Verdicts: map[tracker.Verdict]int{tracker.RetransmitTimeout: 2000}, Errnos: map[int32]int{int32(unix.ETIMEDOUT): 2000},
		Owners:      []incident.Owner{{PID: 1622, Comm: "python3", Connections: 2000}},
		Retransmits: 30000, Outage: 15*time.Minute + 25*time.Second, FirstFailure: t0.Add(15 * time.Minute),
		LastFailure: t0.Add(15*time.Minute + time.Second), Examples: []*tracker.Narrative{ex},
		Joined: []incident.Joined{{Cookie: 9, Local: ex.Local, Remote: ex.Remote, PID: 1622, Verdict: tracker.Stalled, Onset: t0,
			GiveUp: t0.Add(15 * time.Minute)}},
		SharedFate: &incident.SharedFate{Idle: 16, Keepalive: 16, NoticeFirst: t0.Add(2 * time.Hour), NoticeLast: t0.Add(2 * time.Hour),
			Owners: []incident.Owner{{PID: 1622, Comm: "python3", Connections: 16}}, Source: incident.SharedFateSource}}
	if phase == incident.Close {
		inc.Outcome, inc.Ended = incident.Fatal, t0.Add(15*time.Minute+25*time.Second)
	}
	return inc
}

// An incident's text line: the phase or outcome first, the evidence, the
// summary last; --explain adds each verdict's explanation once.
func TestIncidentText(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out, Text, Options{Explain: true})
	if err := w.Incident(testIncident(incident.Close)); err != nil {
		t.Fatal(err)
	}
	line, why, _ := strings.Cut(out.String(), "\n")
	for _, want := range []string{"incident fatal", "peer 10.0.0.5:5432", "id=ab12cd-1", "conns=2000", "owners=python3/1622×2000",
		"retransmit_timeout=2000", "errno=ETIMEDOUT×2000", "idle=16(keepalive=16,never=0)",
		"| all 2000 connections of python3 (pid 1622) to 10.0.0.5:5432 died (ETIMEDOUT ×2000)"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q:\n%s", want, line)
		}
	}
	if !strings.HasPrefix(line[len("03:27:04.000 "):], "incident fatal") {
		t.Errorf("the outcome is not first: %s", line)
	}
	if !strings.HasPrefix(why, "    why (retransmit_timeout): ") {
		t.Errorf("--explain: %q", why)
	}
}

// The JSON record is the documented schema, every field present.
func TestIncidentJSON(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out, JSON, Options{Host: "node-1"})
	if err := w.Incident(testIncident(incident.Close)); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"type", "time", "host", "incident_id", "phase", "peer", "onset", "ended", "outage_ms", "connections",
		"in_trouble", "recovered", "failed", "owners", "verdicts", "errnos", "retransmits", "failed_sends", "probes", "rto_min_ms",
		"rto_max_ms", "giveup_first", "giveup_last", "first_failure", "last_failure", "changes", "outcome", "joined", "shared_fate",
		"summary", "explanations"} {
		if _, ok := rec[key]; !ok {
			t.Errorf("no %q", key)
		}
	}
	var r IncidentRecord
	json.Unmarshal(out.Bytes(), &r)
	if r.Type != "incident" || r.Host != "node-1" || r.Outcome != "fatal" || r.Peer.Port != 5432 || r.Errnos["ETIMEDOUT"] != 2000 ||
		len(r.Joined) != 1 || r.Joined[0].Conns[0] != [4]int64{9, 40000, 0, 900000} || r.SharedFate.Idle != 16 ||
		!strings.Contains(r.Explanations["retransmit_timeout"], "ETIMEDOUT") {
		t.Errorf("%+v", r)
	}
}

// A folded narrative is valid JSON with the incident's id and the
// connection's own facts, and no zero field.
func TestFoldedNarrativeJSON(t *testing.T) {
	n := &tracker.Narrative{Time: time.Date(2026, 12, 4, 3, 27, 4, 5, time.UTC), Verdict: tracker.RetransmitTimeout, Final: true,
		Incident: "ab12cd-1", Cookie: 9, Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.5:5432"),
		Owner: tracker.Owner{PID: 1622, Comm: "python3"}, Errno: int32(unix.ETIMEDOUT), Retransmits: 15,
		RTOs: []time.Duration{120 * time.Second}, Outage: 924 * time.Second}
	var out bytes.Buffer
	w := NewWriter(&out, JSON, Options{Host: "node-1"})
	if err := w.Narrative(n, containers.Info{}); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	want := map[string]any{"type": "narrative", "verdict": "retransmit_timeout", "final": true, "incident_id": "ab12cd-1", "folded": true,
		"lport": 40000.0, "rport": 5432.0, "pid": 1622.0, "errno": "ETIMEDOUT", "retransmits": 15.0, "rto_ms": 120000.0, "outage_ms": 924000.0}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v", k, rec[k], v)
		}
	}
	for _, k := range []string{"probes", "failed_sends", "giveup_in_ms", "summary", "explanation", "settings"} {
		if _, ok := rec[k]; ok {
			t.Errorf("folded record has %q", k)
		}
	}
	// --connections writes it in full.
	out.Reset()
	NewWriter(&out, JSON, Options{Connections: true}).Narrative(n, containers.Info{})
	if !strings.Contains(out.String(), `"explanation":"`) || strings.Contains(out.String(), `"folded"`) {
		t.Errorf("--connections: %s", out.String())
	}
}
