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
		if len(line) > MaxLifecycleLine || bytes.Count(short.Bytes(), []byte("\n")) != 1 {
			t.Errorf("%s: %d bytes, want one line of at most %d:\n%s", n.Verdict, len(line), MaxLifecycleLine, line)
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
		t.Logf("%s: %d bytes (full record %d): %s", n.Verdict, len(line), full.Len()-1, line)
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

// The worst case of issue #21: both addresses IPv6 of the longest form, a
// 12-digit cookie (a year of 30,000 sockets a second), the largest pid, a
// 15-character process name, a 32-character host name, the largest netns
// inode, a connection of 115 days, community_id, and a Kubernetes pod's
// cgroup path with its container and pod ids (or a service's long path).
// The short form stays within MaxLifecycleLine: owner_source gives way
// first, then netns, the cgroup path, the container's ids; what is
// left out is in the --explain record, and every field kept has the full
// record's value.
func TestLifecycleShortFormWorstCase(t *testing.T) {
	const host = "ingest-17.eu-west-3.example.com"
	pod := containers.Info{
		Path:   "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-4f9b8c7d6e5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c.scope",
		ID:     "4f9b8c7d6e5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c",
		PodUID: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
	}
	service := containers.Info{Path: "/system.slice/system-postgresql.slice/postgresql@15-main.service"}
	// Fields in the order they give way.
	givesWay := []string{"owner_source", "netns", "cgroup", "container_id", "pod_uid"}
	for _, tc := range []struct {
		name string
		cg   containers.Info
		v6   bool
		// keeps: fields that must stay.
		keeps []string
	}{
		{"pod, IPv6", pod, true, nil},
		{"service, IPv6", service, true, nil},
		{"service, IPv4", service, false, nil},
		{"pod, IPv4", pod, false, nil},
		{"host, IPv6", containers.Info{Path: "/"}, true, nil},
	} {
		for _, v := range []tracker.Verdict{tracker.LocalClosed, tracker.PeerClosed} {
			local, remote := "[2001:db8:ffff:ffff:ffff:ffff:ffff:fffe]:65535", "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65534"
			if !tc.v6 {
				local, remote = "192.168.255.254:65535", "192.168.255.253:65534"
			}
			n := normalEnd(v, local, remote)
			n.Cookie = 999999999999
			n.Owner = tracker.Owner{PID: 4194304, Comm: "postgres: walwr", Source: wire.OwnerListener}
			n.NetNS = 4294967295
			n.Timeline[len(n.Timeline)-1].At = 9999999999 * time.Millisecond
			var short, full bytes.Buffer
			if err := NewWriter(&short, JSON, Options{Host: host}).Narrative(n, tc.cg); err != nil {
				t.Fatal(err)
			}
			if err := NewWriter(&full, JSON, Options{Host: host, Explain: true}).Narrative(n, tc.cg); err != nil {
				t.Fatal(err)
			}
			line := bytes.TrimSuffix(short.Bytes(), []byte("\n"))
			if len(line) > MaxLifecycleLine {
				t.Errorf("%s %s: %d bytes, want at most %d:\n%s", tc.name, v, len(line), MaxLifecycleLine, line)
			}
			var s, f map[string]any
			if err := json.Unmarshal(line, &s); err != nil {
				t.Fatalf("%s: %v\n%s", tc.name, err, line)
			}
			if err := json.Unmarshal(full.Bytes(), &f); err != nil {
				t.Fatal(err)
			}
			for k, v := range s {
				if fv, ok := f[k]; k != "duration_ms" && (!ok || fv != v) {
					t.Errorf("%s: %s is %v in the short form, %v in the full record", tc.name, k, v, fv)
				}
			}
			for _, k := range append([]string{"verdict", "time", "laddr", "raddr", "lport", "rport", "community_id", "pid", "comm", "cookie", "duration_ms", "host"}, tc.keeps...) {
				if _, ok := s[k]; !ok {
					t.Errorf("%s: no %s in %s", tc.name, k, line)
				}
			}
			// A field gives way only after those before it did.
			var left []string
			for i, k := range givesWay {
				_, inFull := f[k]
				if _, inShort := s[k]; inShort || !inFull {
					continue
				}
				left = append(left, k)
				for _, earlier := range givesWay[:i] {
					if _, ok := s[earlier]; ok {
						t.Errorf("%s: %s left out before %s:\n%s", tc.name, k, earlier, line)
					}
				}
			}
			t.Logf("%s %s: %d bytes (full record %d), left out: %v", tc.name, v, len(line), full.Len()-1, left)
		}
	}
}
