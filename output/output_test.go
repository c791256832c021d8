package output

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer"
)

func sampleEvent(local, remote string) *tracer.Event {
	ev := &tracer.Event{
		Time:   time.Date(2026, 11, 21, 3, 4, 5, 123456789, time.UTC),
		Kind:   tracer.KindRetransmit,
		Cookie: 0x2a,
		Local:  netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote),
		NetNS: 4026531840, PID: 77, State: tracer.StateEstablished, CAState: tracer.CALoss,
		Retransmits: 2, Backoff: 2, RTO: 800 * time.Millisecond, RTOMax: 120 * time.Second,
		AckAge: 1400 * time.Millisecond, PacketsOut: 3,
		Settings: tracer.Settings{Retries2: 15, SynRetries: 6, KeepaliveTime: 2 * time.Hour,
			KeepaliveIntvl: 75 * time.Second, KeepaliveProbes: 9},
	}
	ev.SetComm("curl")
	return ev
}

func TestEventTextAddresses(t *testing.T) {
	for _, tc := range []struct{ local, remote, want string }{
		{"10.0.0.1:40000", "10.0.0.2:80", "10.0.0.1:40000 > 10.0.0.2:80 ESTABLISHED"},
		{"[fd00::1]:40000", "[fd00::2]:443", "[fd00::1]:40000 > [fd00::2]:443 ESTABLISHED"},
	} {
		var buf bytes.Buffer
		w := NewWriter(&buf, Text, Options{})
		if err := w.Event(sampleEvent(tc.local, tc.remote), nil); err != nil {
			t.Fatal(err)
		}
		line := buf.String()
		if !strings.Contains(line, tc.want) || !strings.HasPrefix(line, "03:04:05.123456 retransmit") {
			t.Errorf("line %q lacks %q", line, tc.want)
		}
		for _, part := range []string{"ca=Loss", "retrans=2", "rto=800ms", "ack_age=1.4s", "pid=77 comm=curl", "sk=2a"} {
			if !strings.Contains(line, part) {
				t.Errorf("line %q lacks %q", line, part)
			}
		}
	}
}

func TestEventJSON(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, JSON, Options{})
	if err := w.Event(sampleEvent("[fd00::1]:40000", "[fd00::2]:443"), nil); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not JSON: %v: %s", err, buf.String())
	}
	want := map[string]any{
		"type": "event", "kind": "retransmit", "family": "ipv6", "laddr": "fd00::1", "lport": 40000.0,
		"raddr": "fd00::2", "rport": 443.0, "pid": 77.0, "comm": "curl", "state": "ESTABLISHED",
		"ca_state": "Loss", "rto_ms": 800.0, "time": "2026-11-21T03:04:05.123456789Z",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	settings := got["settings"].(map[string]any)
	if settings["tcp_retries2"] != 15.0 || settings["retrans_budget_ms"] != 924600.0 || settings["keepalive_budget_s"] != 7875.0 {
		t.Errorf("settings %v", settings)
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"curl":            "curl",
		"evil\x1b[31mred": `evil\x1b[31mred`,
		"tab\there":       `tab\x09here`,
		"bad\xffutf8":     `bad\xffutf8`,
		`back\slash`:      `back\\slash`,
		"ünïcode":         "ünïcode",
		"bidi\u202eatt":   `bidi\u202eatt`,
		"c1\u009bcontrol": `c1\x9bcontrol`,
	} {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCommIsSanitisedInText(t *testing.T) {
	ev := sampleEvent("10.0.0.1:1", "10.0.0.2:2")
	ev.SetComm("x\x1b]0;pwn\x07")
	var buf bytes.Buffer
	if err := NewWriter(&buf, Text, Options{}).Event(ev, nil); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(buf.String(), "\x1b\x07") {
		t.Errorf("control characters reached the terminal: %q", buf.String())
	}
}

type brokenPipe struct{}

func (brokenPipe) Write([]byte) (int, error) { return 0, syscall.EPIPE }

func TestClosedOutput(t *testing.T) {
	w := NewWriter(brokenPipe{}, Text, Options{})
	if err := w.Event(sampleEvent("10.0.0.1:1", "10.0.0.2:2"), nil); err != ErrClosedOutput {
		t.Fatalf("got %v, want ErrClosedOutput", err)
	}
}
