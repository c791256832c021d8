package output

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

func sampleEvent(local, remote string) *wire.Event {
	ev := &wire.Event{
		Time:   time.Date(2026, 11, 21, 3, 4, 5, 123456789, time.UTC),
		Kind:   wire.KindRetransmit,
		Cookie: 0x2a,
		Local:  netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote),
		NetNS: 4026531840, PID: 77, State: tcp.StateEstablished, CAState: tcp.CALoss,
		Retransmits: 2, Backoff: 2, RTO: 800 * time.Millisecond, RTOMax: 120 * time.Second,
		AckAge: 1400 * time.Millisecond, PacketsOut: 3,
		Settings: tcp.Settings{Retries2: 15, SynRetries: 6, KeepaliveTime: 2 * time.Hour,
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
		if err := w.Event(sampleEvent(tc.local, tc.remote), nil, containers.Info{}); err != nil {
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
	if err := w.Event(sampleEvent("[fd00::1]:40000", "[fd00::2]:443"), nil, containers.Info{}); err != nil {
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
	if err := NewWriter(&buf, Text, Options{}).Event(ev, nil, containers.Info{}); err != nil {
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
	if err := w.Event(sampleEvent("10.0.0.1:1", "10.0.0.2:2"), nil, containers.Info{}); err != ErrClosedOutput {
		t.Fatalf("got %v, want ErrClosedOutput", err)
	}
}

func TestNarrativeJSONMatchesEncodingJSON(t *testing.T) {
	for _, n := range []*tracker.Narrative{
		{
			Time: time.Date(2026, 11, 21, 3, 4, 5, 6, time.UTC), Verdict: tracker.LocalProcessExited, Final: true,
			Cookie: 99, Local: netip.MustParseAddrPort("[fd00::1]:1"), Remote: netip.MustParseAddrPort("[fd00::2]:2"),
			NetNS: 7, Owner: tracker.Owner{PID: 42, Comm: "we\"ird\\name\x01\u2028<&>\xff", Thread: "bio\"aof\x02", Source: wire.OwnerClose},
			State: tcp.StateFinWait1, Inode: 77, Orphan: true, LostRecords: true, FailedSends: 1,
			Budget: tracker.Budget{Limit: time.Second, Setting: "tcp_retries2", Value: 3},
			Errno:  32, ResetReason: "TCP_ABORT_ON_CLOSE", Retransmits: 3, Probes: 2,
			Outage: 1500 * time.Millisecond, GiveUpIn: time.Second, RTOs: []time.Duration{200 * time.Millisecond, 400 * time.Millisecond},
			ExitSignal: 9, ExitStatus: 0, SentReset: true,
			Timeline: []tracker.Step{{At: time.Millisecond, Kind: wire.KindState, Old: tcp.StateClose, State: tcp.StateSynSent},
				{At: 2 * time.Second, Kind: wire.KindSendReset, ResetReason: "TCP_ABORT_ON_CLOSE"}},
			Settings: tcp.Settings{Retries2: 15, SynRetries: 6, KeepaliveOn: true, KeepaliveTime: time.Hour,
				KeepaliveIntvl: time.Minute, KeepaliveProbes: 9, UserTimeout: 5 * time.Second},
			RTOMax: 120 * time.Second,
		},
		{Verdict: tracker.Stalled, Local: netip.MustParseAddrPort("10.0.0.1:1"), Remote: netip.MustParseAddrPort("10.0.0.2:2")},
		{Verdict: tracker.RetransmitTimeout, Final: true, EndUnseen: true, Errno: 110, Local: netip.MustParseAddrPort("10.0.0.1:1"),
			Remote: netip.MustParseAddrPort("10.0.0.2:2"), WindowFacts: tracker.WindowFacts{WindowProbes: 3}},
		{Verdict: tracker.Stalled, Local: netip.MustParseAddrPort("[fd00::1]:1"), Remote: netip.MustParseAddrPort("[fd00::2]:2"),
			WindowFacts: tracker.WindowFacts{WindowProbes: 3},
			DropFacts: tracker.DropFacts{DropsSeen: true, Drops: []tracker.Drop{{Reason: "NOT_SPECIFIED", Site: tracker.SiteNoRoute6, Count: 3},
				{Inbound: true, Reason: "NETFILTER_DROP", Hook: "INPUT", Elsewhere: true, Count: 1}}}},
		{Verdict: tracker.CloseWaitStuck, Final: true, Local: netip.MustParseAddrPort("10.0.0.1:1"), Remote: netip.MustParseAddrPort("10.0.0.2:2"),
			CloseWaitSockets: 3, CloseWaitFor: 75 * time.Second, CloseWaitExited: true},
		{Verdict: tracker.LocalPortsExhausted, Final: true, Errno: 99, Local: netip.MustParseAddrPort("10.0.0.1:0"), Remote: netip.MustParseAddrPort("10.0.0.2:2"),
			Ports: tracker.PortUse{Failures: 3, Known: true, TimeWait: 4, Other: 1, TimeWaitAll: 9, RangeLo: 40000, RangeHi: 40003, TwReuse: 0}},
		{Verdict: tracker.SynackUnanswered, Local: netip.MustParseAddrPort("10.0.0.1:443"), Remote: netip.MustParseAddrPort("0.0.0.0:0"),
			State: tcp.StateListen, ListenerFacts: tracker.ListenerFacts{QueueLimit: 4, SynackRetransmits: 9, SynackClients: 3,
				SynQueueLen: 3, SynQueueMax: 5, CookiesSent: 7, Syncookies: 1, CookiesKnown: true, Cause: tracker.SynFlood}},
		{Verdict: tracker.AcceptQueueOverflow, Local: netip.MustParseAddrPort("[::]:80"), Remote: netip.MustParseAddrPort("[::]:0"),
			State: tcp.StateListen, ListenerFacts: tracker.ListenerFacts{QueueLen: 5, QueueLimit: 4, TurnedAway: 20, SynackAcked: 2,
				SynackRetransmits: 4, Syncookies: -1, Cause: tracker.NotAccepting}},
	} {
		rec := NewNarrativeRecord(n, containers.Info{})
		want, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		got := appendNarrativeJSON(nil, &rec)
		var g, w map[string]any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("hand-written JSON does not parse: %v\n%s", err, got)
		}
		json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("hand-written JSON differs:\n got %s\nwant %s", got, want)
		}
		if keyOrder(t, got) != keyOrder(t, want) {
			t.Errorf("field order differs:\n got %s\nwant %s", keyOrder(t, got), keyOrder(t, want))
		}
	}
}

func keyOrder(t *testing.T, b []byte) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	var keys []string
	depth := 0
	expectKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' {
				depth++
				expectKey = true
			} else if v == '}' {
				depth--
			}
			continue
		case string:
			if expectKey && depth == 1 {
				keys = append(keys, v)
			}
		}
		expectKey = dec.More() && depth >= 1
	}
	return strings.Join(keys, ",")
}

func BenchmarkNarrativeJSON(b *testing.B) {
	n := benchNarrative()
	w := NewWriter(io.Discard, JSON, Options{})
	b.ReportAllocs()
	for b.Loop() {
		w.Narrative(n, containers.Info{})
	}
}

func benchNarrative() *tracker.Narrative {
	return &tracker.Narrative{Verdict: tracker.LocalClosed, Final: true, Local: netip.MustParseAddrPort("10.0.0.1:1"),
		Remote: netip.MustParseAddrPort("10.0.0.2:2"),
		Timeline: []tracker.Step{{Kind: wire.KindState, Old: tcp.StateClose, State: tcp.StateSynSent},
			{Kind: wire.KindState, Old: tcp.StateSynSent, State: tcp.StateEstablished},
			{Kind: wire.KindState, Old: tcp.StateEstablished, State: tcp.StateFinWait1}}}
}

// BenchmarkNarrativeEncodingJSON is the same narrative through
// encoding/json: the figure the hand-written encoder must beat to earn its
// place (compare with BenchmarkNarrativeJSON).
func BenchmarkNarrativeEncodingJSON(b *testing.B) {
	n := benchNarrative()
	w := NewWriter(io.Discard, JSON, Options{})
	b.ReportAllocs()
	for b.Loop() {
		rec := NewNarrativeRecord(n, containers.Info{})
		if err := w.writeJSON(&rec); err != nil {
			b.Fatal(err)
		}
	}
}

// The thread's name is extra detail after the process, in text and JSON
// (thread, v2 thread.name), and absent when the kernel gave none.
func TestThreadAfterProcess(t *testing.T) {
	n := &tracker.Narrative{Time: time.Date(2026, 12, 4, 23, 0, 0, 0, time.UTC), Verdict: tracker.LocalProcessExited, Final: true,
		Local: netip.MustParseAddrPort("10.0.0.1:6379"), Remote: netip.MustParseAddrPort("10.0.0.2:50000"),
		Owner: tracker.Owner{PID: 3745, Comm: "redis-server", Thread: "bio_aof_fsync", Source: wire.OwnerClose}, ExitSignal: 9}
	var text, v1, v2 bytes.Buffer
	for _, o := range []struct {
		buf    *bytes.Buffer
		format Format
		schema Schema
	}{{&text, Text, SchemaV1}, {&v1, JSON, SchemaV1}, {&v2, JSON, SchemaV2}} {
		if err := NewWriter(o.buf, o.format, Options{Schema: o.schema}).Narrative(n, containers.Info{}); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(text.String(), " pid=3745 comm=redis-server thread=bio_aof_fsync ") {
		t.Errorf("text: %s", text.String())
	}
	var r1, r2 map[string]any
	if err := json.Unmarshal(v1.Bytes(), &r1); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(v2.Bytes(), &r2); err != nil {
		t.Fatal(err)
	}
	if r1["comm"] != "redis-server" || r1["thread"] != "bio_aof_fsync" || r2["process.executable.name"] != "redis-server" || r2["thread.name"] != "bio_aof_fsync" {
		t.Errorf("v1 comm %v thread %v; v2 %v %v", r1["comm"], r1["thread"], r2["process.executable.name"], r2["thread.name"])
	}
	n.Owner.Thread = ""
	text.Reset()
	v1.Reset()
	NewWriter(&text, Text, Options{}).Narrative(n, containers.Info{})
	NewWriter(&v1, JSON, Options{}).Narrative(n, containers.Info{})
	if strings.Contains(text.String(), "thread=") || strings.Contains(v1.String(), `"thread"`) {
		t.Errorf("no thread, yet: %s%s", text.String(), v1.String())
	}
}

func TestCommCannotForgeFields(t *testing.T) {
	ev := sampleEvent("10.0.0.1:1", "10.0.0.2:2")
	ev.PID = 4918
	ev.SetComm("x pid=1 comm=y")
	var buf bytes.Buffer
	if err := NewWriter(&buf, Text, Options{}).Event(ev, nil, containers.Info{}); err != nil {
		t.Fatal(err)
	}
	before, _, _ := strings.Cut(buf.String(), " comm=")
	if strings.Count(before, " pid=") != 1 || !strings.Contains(buf.String(), ` comm="x pid=1 comm=y" `) {
		t.Errorf("a process name forged fields: %q", buf.String())
	}
}

// BenchmarkNarrativeJSONToPipe writes narratives into a pipe that another
// goroutine drains, as tcpwatch -o json | reader does: a write() per line
// (perLine) against whole lines held and written together (batch, what
// tcpwatch does; issue #11).
func BenchmarkNarrativeJSONToPipe(b *testing.B) {
	for _, batch := range []bool{false, true} {
		name := "perLine"
		if batch {
			name = "batch"
		}
		b.Run(name, func(b *testing.B) {
			r, wr, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			drained := make(chan struct{})
			go func() {
				io.Copy(io.Discard, r)
				close(drained)
			}()
			n := benchNarrative()
			w := NewWriter(wr, JSON, Options{Batch: batch})
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := w.Narrative(n, containers.Info{}); err != nil {
					b.Fatal(err)
				}
				if i%256 == 255 { // the engine flushes when the ring is empty
					w.Flush()
				}
			}
			w.Flush()
			wr.Close()
			<-drained
			r.Close()
		})
	}
}

// A batching writer holds whole lines until Flush, and writes everything
// told.
func TestBatchHoldsWholeLinesUntilFlush(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, JSON, Options{Batch: true})
	n := benchNarrative()
	for range 3 {
		if err := w.Narrative(n, containers.Info{}); err != nil {
			t.Fatal(err)
		}
	}
	if buf.Len() != 0 {
		t.Fatalf("a batching writer wrote before Flush: %q", buf.String())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(buf.String(), "\n"); got != 3 || !strings.HasSuffix(buf.String(), "}\n") {
		t.Errorf("after Flush: %d lines, %q", got, buf.String())
	}
	// Past batchMax it writes by itself, whole lines only.
	buf.Reset()
	for buf.Len() == 0 {
		w.Narrative(n, containers.Info{})
	}
	if !strings.HasSuffix(buf.String(), "\n") || buf.Len() < batchMax {
		t.Errorf("wrote %d bytes on its own, want whole lines past %d", buf.Len(), batchMax)
	}
}

// The stats line tells apart connections whose end was lost from healthy
// ones from before tcpwatch that ended unseen by design: only the first
// is a loss.
func TestStatsTellUnseenEndsFromLostOnes(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, Text, Options{})
	if err := w.Stats(engine.Stats{Events: 10, Reconciled: 2, EndedUnseen: 20, EndsAtDeadline: 1}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	line := buf.String()
	if !strings.Contains(line, "2 connections whose end was lost") || !strings.Contains(line, "20 connections from before tcpwatch ended unseen (by design") ||
		!strings.Contains(line, "1 connections whose end was told at the kernel's deadline (end_unseen") {
		t.Errorf("stats: %s", line)
	}
	buf.Reset()
	w = NewWriter(&buf, JSON, Options{})
	if err := w.Stats(engine.Stats{Events: 10, EndsAtDeadline: 3}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	var rec struct {
		EndsAtDeadline *uint64 `json:"ends_at_deadline"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil || rec.EndsAtDeadline == nil || *rec.EndsAtDeadline != 3 {
		t.Errorf("stats JSON %s: ends_at_deadline missing or wrong (%v)", buf.Bytes(), err)
	}
}

// The kernel's skips for want of room are in the stats record, each by
// its counter's name (JSON) and in words (text), and in the loss record
// written when they grow; none is added to lost.
func TestStatsAndLossTellSkips(t *testing.T) {
	st := engine.Stats{Events: 10, Lost: 1, RingFull: 1, Skipped: tracer.Skipped{NoStorage: 3, TroubledFull: 2, KeepaliveFull: 1}}
	var buf bytes.Buffer
	w := NewWriter(&buf, JSON, Options{})
	if err := w.Stats(st); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	var rec struct {
		Lost    uint64            `json:"lost"`
		Skipped map[string]uint64 `json:"skipped"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if want := map[string]uint64{"no_storage": 3, "troubled_full": 2, "keepalive_full": 1, "synack_full": 0}; rec.Lost != 1 || !maps.Equal(rec.Skipped, want) {
		t.Errorf("stats JSON: lost %d, skipped %v; want 1, %v: %s", rec.Lost, rec.Skipped, want, buf.String())
	}

	buf.Reset()
	w = NewWriter(&buf, Text, Options{})
	if err := w.Stats(st); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	for _, want := range []string{"1 lost", "3 sockets without storage (no_storage", "2 marks of a connection in trouble refused (troubled_full",
		"1 keepalive probe not remembered (keepalive_full"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("stats text lacks %q: %s", want, buf.String())
		}
	}
	buf.Reset()
	if err := w.Stats(engine.Stats{Events: 10}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if strings.Contains(buf.String(), "skips") {
		t.Errorf("stats text tells skips where none was counted: %s", buf.String())
	}

	buf.Reset()
	if err := w.Loss(engine.Loss{Skipped: tracer.Skipped{TroubledFull: 4}, NewSkipped: 4}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if line := buf.String(); strings.Contains(line, "records lost (") || !strings.Contains(line, "4 kernel skips for want of room (in all: 4 marks of a connection in trouble refused") {
		t.Errorf("loss line for skips only: %s", line)
	}
	buf.Reset()
	w = NewWriter(&buf, JSON, Options{})
	if err := w.Loss(engine.Loss{Total: 2, New: 2, RingFull: 2, Skipped: tracer.Skipped{KeepaliveFull: 1}, NewSkipped: 1}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	var loss struct {
		New        uint64            `json:"new"`
		NewSkipped uint64            `json:"new_skipped"`
		Skipped    map[string]uint64 `json:"skipped"`
	}
	if err := json.Unmarshal(buf.Bytes(), &loss); err != nil || loss.New != 2 || loss.NewSkipped != 1 || loss.Skipped["keepalive_full"] != 1 {
		t.Errorf("loss JSON %+v (%v): %s", loss, err, buf.String())
	}
}

// A final the deadline decided says so in both forms.
func TestEndUnseenIsShown(t *testing.T) {
	n := &tracker.Narrative{Verdict: tracker.RetransmitTimeout, Final: true, EndUnseen: true, Errno: 110,
		Local: netip.MustParseAddrPort("10.0.0.1:1"), Remote: netip.MustParseAddrPort("10.0.0.2:2")}
	rec := NewNarrativeRecord(n, containers.Info{})
	if got := string(appendNarrativeJSON(nil, &rec)); !strings.Contains(got, `"end_unseen":true`) {
		t.Errorf("JSON lacks end_unseen: %s", got)
	}
	n.EndUnseen = false
	rec = NewNarrativeRecord(n, containers.Info{})
	if got := string(appendNarrativeJSON(nil, &rec)); strings.Contains(got, "end_unseen") {
		t.Errorf("JSON names end_unseen when it is false: %s", got)
	}
}
