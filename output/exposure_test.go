package output

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/exposure"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

func exposureSockets() []exposure.Socket {
	ap := netip.MustParseAddrPort
	off := exposure.Settings{KeepaliveIdle: 7200 * time.Second, KeepaliveIdleFrom: exposure.FromSysctl,
		KeepaliveIntvl: 75 * time.Second, KeepaliveIntvlFrom: exposure.FromSysctl, KeepaliveCount: 9,
		KeepaliveCountFrom: exposure.FromSysctl, RTOMax: 120 * time.Second, RTOMaxFrom: exposure.FromKernel, Retries2: 15}
	goDefault := off
	goDefault.Keepalive = true
	goDefault.KeepaliveIdle, goDefault.KeepaliveIntvl = 15*time.Second, 15*time.Second
	goDefault.KeepaliveIdleFrom, goDefault.KeepaliveIntvlFrom, goDefault.KeepaliveCountFrom = exposure.FromSocket, exposure.FromSocket, exposure.FromSocket
	return []exposure.Socket{
		{State: tcp.StateEstablished, NetNS: 1, Local: ap("10.0.0.1:40001"), Remote: ap("10.0.0.9:5432"), PID: 7, Comm: "psql", Settings: off, Idle: time.Second},
		{State: tcp.StateEstablished, NetNS: 1, Local: ap("10.0.0.1:40002"), Remote: ap("10.0.0.9:5432"), PID: 7, Comm: "psql", Settings: off, Idle: 3 * time.Second},
		{State: tcp.StateEstablished, NetNS: 1, Local: ap("10.0.0.1:40003"), Remote: ap("10.0.0.9:6379"), PID: 8, Comm: "app", Settings: goDefault},
	}
}

// Text: the worst first, one line per process and peer, the sentence last.
func TestExposureText(t *testing.T) {
	var buf bytes.Buffer
	if err := NewWriter(&buf, Text, Options{}).Exposure(exposure.Build(exposureSockets()), time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		"exposure: 3 connections in 1 network namespace, by when their kernel would notice a silent peer: never=2 minutes=1 (also 0 in TIME_WAIT, 0 listening)",
		"never    psql[7] 2 connections → 10.0.0.9:5432 ESTABLISHED netns=1 idle 1s–3s unacked=0: no keepalive (SO_KEEPALIVE off): while it is idle, nothing will ever end it if the peer vanishes; data sent and unanswered ends it 924.6s (15m24.6s) after the first retransmission (tcp_retries2=15: 1023 × 200ms + 6 × 120s)",
		"minutes  app[8] 10.0.0.1:40003 → 10.0.0.9:6379 ESTABLISHED netns=1 idle 0ms unacked=0: keepalive after 15s idle (socket), then 9 probes (socket) 15s apart (socket): 15s + 9 × 15s = 150s (2m30s) while idle; data sent and unanswered ends it 924.6s (15m24.6s) after the first retransmission (tcp_retries2=15: 1023 × 200ms + 6 × 120s)",
		"by process  psql[7]: never=2",
		"by process  app[8]: minutes=1",
		"by peer     10.0.0.9:5432: never=2",
		"by peer     10.0.0.9:6379: minutes=1",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// JSON: one record per connection, null for never, then the summary.
func TestExposureJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := NewWriter(&buf, JSON, Options{Host: "h"}).Exposure(exposure.Build(exposureSockets()), time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 3 records and a summary:\n%s", len(lines), buf.String())
	}
	var first, last map[string]any
	json.Unmarshal([]byte(lines[0]), &first)
	json.Unmarshal([]byte(lines[2]), &last)
	if first["type"] != "exposure" || first["class"] != "never" || first["idle_detect_ms"] != nil || first["sending_detect_ms"] != 924600.0 ||
		!strings.Contains(lines[0], `"idle_detect_ms":null`) {
		t.Errorf("never: %s", lines[0])
	}
	if last["idle_detect_ms"] != 150000.0 || last["idle_detect_by"] != "keepalive" ||
		last["settings"].(map[string]any)["keepalive_idle_from"] != "socket" {
		t.Errorf("go default: %s", lines[2])
	}
	if !strings.Contains(lines[3], `"type":"exposure_summary"`) || !strings.Contains(lines[3], `"never":2`) {
		t.Errorf("summary: %s", lines[3])
	}
}
