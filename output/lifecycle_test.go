package output

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

func normalEnd(verdict tracker.Verdict, local, remote string) *tracker.Narrative {
	return &tracker.Narrative{
		Time: time.Date(2026, 12, 4, 19, 7, 26, 33114041, time.UTC), Verdict: verdict, Final: true,
		Cookie: 48211933, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote),
		NetNS: 4026531833, Inode: 4282306, State: tcp.StateClose, Orphan: verdict == tracker.LocalClosed,
		Owner:  tracker.Owner{PID: 4194304, Comm: "postgres: walwr", Source: wire.OwnerListener},
		Budget: tracker.Budget{Limit: 102200 * time.Millisecond, Setting: "tcp_orphan_retries"},
		Timeline: []tracker.Step{
			{At: 0, Kind: wire.KindState, Old: tcp.StateSynRecv, State: tcp.StateEstablished},
			{At: 61234 * time.Millisecond, Kind: wire.KindState, Old: tcp.StateEstablished, State: tcp.StateFinWait1},
			{At: 61235 * time.Millisecond, Kind: wire.KindState, Old: tcp.StateFinWait2, State: tcp.StateClose},
		},
	}
}

// Issue #21: a normal lifecycle is one JSON line of at most 400 bytes by
// default, for a host's process with a long hostname, a 15-character
// process name, a systemd service's cgroup, over IPv4 or IPv6; its fields
// are the full record's, with the same values; --explain gives the full
// record, and a normal end with evidence (a reset) keeps it.
func TestLifecycleShortForm(t *testing.T) {
	cg := containers.Info{Path: "/system.slice/postgresql@15-main.service"}
	const host = "db-7.prod.example.net"
	for _, n := range []*tracker.Narrative{
		normalEnd(tracker.LocalClosed, "10.201.44.109:5432", "10.201.45.201:49822"),
		normalEnd(tracker.PeerClosed, "[2001:db8:4006:812::200e]:5432", "[2001:db8:4006:813::1a2b]:49822"),
	} {
		var short, full bytes.Buffer
		if err := NewWriter(&short, JSON, Options{Host: host}).Narrative(n, cg); err != nil {
			t.Fatal(err)
		}
		if err := NewWriter(&full, JSON, Options{Host: host, Explain: true}).Narrative(n, cg); err != nil {
			t.Fatal(err)
		}
		line := bytes.TrimSuffix(short.Bytes(), []byte("\n"))
		// 400 bytes, and the 46 of community_id (the join key every
		// narrative carries, docs/pipelines.md).
		if len(line) > 450 || bytes.Count(short.Bytes(), []byte("\n")) != 1 {
			t.Errorf("%s: %d bytes, want one line of at most 450:\n%s", n.Verdict, len(line), line)
		}
		var s, f map[string]any
		if err := json.Unmarshal(line, &s); err != nil {
			t.Fatalf("%s: %v\n%s", n.Verdict, err, line)
		}
		if err := json.Unmarshal(full.Bytes(), &f); err != nil {
			t.Fatal(err)
		}
		if _, ok := f["timeline"]; !ok || full.Len() < 1000 {
			t.Errorf("%s --explain: not the full record (%d bytes)", n.Verdict, full.Len())
		}
		for k, v := range s {
			if k == "duration_ms" {
				if v != float64(61235) {
					t.Errorf("%s: duration_ms %v, want 61235", n.Verdict, v)
				}
				continue
			}
			if fv, ok := f[k]; !ok || fv != v {
				t.Errorf("%s: %s is %v in the short form, %v in the full record", n.Verdict, k, v, fv)
			}
		}
		for _, k := range []string{"verdict", "final", "time", "host", "cookie", "laddr", "lport", "raddr", "rport", "pid", "comm", "cgroup", "duration_ms"} {
			if _, ok := s[k]; !ok {
				t.Errorf("%s: no %s in %s", n.Verdict, k, line)
			}
		}
		t.Logf("%s: %d bytes (full record %d)", n.Verdict, len(line), full.Len()-1)
	}
	reset := normalEnd(tracker.PeerClosed, "10.201.44.109:5432", "10.201.45.201:49822")
	reset.Errno = 32 // EPIPE: the peer reset after its FIN
	var b bytes.Buffer
	if err := NewWriter(&b, JSON, Options{}).Narrative(reset, cg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b.Bytes(), []byte(`"timeline":`)) || !bytes.Contains(b.Bytes(), []byte(`"errno":"EPIPE"`)) {
		t.Errorf("peer_closed with a reset: not the full record: %s", b.Bytes())
	}
}
