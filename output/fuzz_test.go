package output

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// The output fuzz targets build a narrative and an event from fuzzed
// bytes (a kernel record, any decodable content) and a fuzzed process name
// (any bytes: a process may call itself anything), render them, and check
// the promises of each format.

var fuzzReasons = tcp.ResetReasons{1: "NO_SOCKET", 8: "TCP_ABORT_ON_DATA"}

func fuzzSeeds(f *testing.F) {
	for _, comm := range []string{"curl", "a b\\", "\\\"", "x pid=1 comm=y", "\x1b[31mred", "a\nb", "bad\xffutf8", "quo\"te", "back\\slash",
		"\u202eevil", "a | b", "\u2028", "", "=", "\"", "\x00nul"} {
		for sel := byte(0); sel < 16; sel += 5 {
			ev := sampleEvent("10.0.0.1:40000", "[fd00::2]:443")
			ev.Kind = wire.Kind(sel % 8)
			ev.Flags = wire.Flags(sel) << 4
			f.Add(wire.Encode(ev), comm, sel)
		}
	}
}

// fuzzInputs turns fuzzed bytes into an event and a narrative about it.
func fuzzInputs(t *testing.T, raw []byte, comm string, sel byte) (*wire.Event, *tracker.Narrative) {
	size := len(wire.Encode(&wire.Event{}))
	rec := make([]byte, size)
	copy(rec, raw)
	var ev wire.Event
	if err := wire.Decode(rec, wire.NewClock(0, time.Unix(1_800_000_000, 0)), &ev); err != nil {
		t.Fatal(err)
	}
	ev.SetComm(comm)
	n := &tracker.Narrative{
		Time: ev.Time, Mono: ev.Mono, Verdict: tracker.Verdicts[int(sel)%len(tracker.Verdicts)], Final: sel&0x10 != 0,
		Cookie: ev.Cookie, Local: ev.Local, Remote: ev.Remote, NetNS: ev.NetNS, Inode: ev.Inode,
		Owner: tracker.Owner{PID: ev.PID, Comm: comm, Source: wire.OwnerProcfs}, State: ev.State,
		Orphan: ev.Flags&1 != 0, Connecting: ev.Flags&2 != 0, Errno: ev.Detail, ResetReason: fuzzReasons.Name(ev.SkErr),
		ResetState: ev.OldState, Retransmits: int(ev.Retransmits), FailedSends: int(ev.Backoff), FailedErrno: ev.SkErrSoft,
		Probes: int(ev.ProbesOut), Outage: ev.AckAge, GiveUpIn: ev.RTO, RTOs: []time.Duration{ev.RTO, ev.RTOMax},
		BackoffReverted: ev.Flags&4 != 0, SkErrSoft: ev.SkErrSoft, CAState: ev.CAState,
		Budget:     tracker.Budget{Limit: ev.RTOMax, Setting: "tcp_retries2", Value: int(ev.Settings.Retries2)},
		ExitSignal: ev.ExitSignal(), ExitStatus: ev.ExitStatus(), SentReset: ev.Flags&8 != 0, LostRecords: sel&0x20 != 0,
		Settings: ev.Settings, RTOMax: ev.RTOMax,
		Timeline: []tracker.Step{{At: ev.AckAge, Kind: ev.Kind, Flags: ev.Flags, State: ev.State, Old: ev.OldState,
			CA: ev.CAState, OldCA: ev.OldCA, Retransmits: ev.Retransmits, Probes: ev.ProbesOut, Detail: ev.Detail, RTO: ev.RTO}},
	}
	return &ev, n
}

// oneLine checks that out is exactly one line and returns it.
func oneLine(t *testing.T, what string, out []byte) string {
	t.Helper()
	s := string(out)
	if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		t.Fatalf("%s: not one line: %q", what, s)
	}
	return strings.TrimSuffix(s, "\n")
}

// JSON: every narrative and event is one line of valid JSON, and the
// process name comes back as given (each invalid UTF-8 byte as U+FFFD).
func FuzzJSONOutput(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, raw []byte, comm string, sel byte) {
		ev, n := fuzzInputs(t, raw, comm, sel)
		var buf bytes.Buffer
		w := NewWriter(&buf, JSON, Options{})
		for what, write := range map[string]func() error{
			"narrative": func() error { return w.Narrative(n, containers.Info{}) },
			"event":     func() error { return w.Event(ev, fuzzReasons, containers.Info{}) },
		} {
			buf.Reset()
			if err := write(); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			line := oneLine(t, what, buf.Bytes())
			var got map[string]any
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatalf("%s: invalid JSON %v: %s", what, err, line)
			}
			// Each invalid byte becomes one U+FFFD, as encoding/json does
			// (and as a conversion to []rune does).
			want := string([]rune(ev.Comm()))
			if what == "narrative" {
				want = string([]rune(comm))
			}
			if ev.PID != 0 && got["comm"] != want {
				t.Fatalf("%s: comm %q, want %q", what, got["comm"], want)
			}
		}
	})
}

// Text: every narrative and event is one line with no control or format
// character, and the process name is one field (comm=...) that cannot
// forge others.
func FuzzTextOutput(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, raw []byte, comm string, sel byte) {
		ev, n := fuzzInputs(t, raw, comm, sel)
		var buf bytes.Buffer
		w := NewWriter(&buf, Text, Options{Color: sel&0x40 != 0})
		for what, write := range map[string]func() error{
			"narrative": func() error { return w.Narrative(n, containers.Info{}) },
			"event":     func() error { return w.Event(ev, fuzzReasons, containers.Info{}) },
		} {
			buf.Reset()
			if err := write(); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			line := oneLine(t, what, buf.Bytes())
			if w.color {
				for _, esc := range []string{ansiRed, ansiYellow, ansiGreen, ansiReset} {
					line = strings.ReplaceAll(line, esc, "")
				}
			}
			for i, r := range line {
				if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
					t.Fatalf("%s: character %U at %d: %q", what, r, i, line)
				}
			}
			if ev.PID == 0 {
				continue
			}
			fields := textFields(line)
			var pids, comms []string
			for _, f := range fields {
				if v, ok := strings.CutPrefix(f, "pid="); ok {
					pids = append(pids, v)
				}
				if v, ok := strings.CutPrefix(f, "comm="); ok {
					comms = append(comms, v)
				}
			}
			wantComm := Sanitize(ev.Comm())
			if what == "narrative" {
				wantComm = Sanitize(comm)
			}
			if len(pids) != 1 || len(comms) != 1 || comms[0] != wantComm {
				t.Fatalf("%s: fields pid=%q comm=%q, want one pid and comm=%q: %q", what, pids, comms, wantComm, line)
			}
		}
	})
}

// textFields splits a text line as a reader would: on spaces, a value in
// double quotes is one field (inside, a backslash escapes the next byte), and the summary after " | " is
// prose, not fields.
func textFields(line string) []string {
	var out []string
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		if line == "" || strings.HasPrefix(line, "| ") || line == "|" {
			break
		}
		var f strings.Builder
		quoted := false
		i := 0
		for ; i < len(line); i++ {
			c := line[i]
			switch {
			case quoted && c == '\\' && i+1 < len(line):
				// Sanitize's escapes (\\, \x.., \u....) stay as they are; \" is a quote.
				if line[i+1] == '"' {
					f.WriteByte('"')
				} else {
					f.WriteByte(c)
					f.WriteByte(line[i+1])
				}
				i++
			case c == '"':
				quoted = !quoted
			case c == ' ' && !quoted:
				goto done
			default:
				f.WriteByte(c)
			}
		}
	done:
		out = append(out, f.String())
		line = line[i:]
	}
	return out
}
