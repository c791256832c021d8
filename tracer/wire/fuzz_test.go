package wire

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// Fuzz targets: `make fuzz` runs each for a while; `go test` runs their
// seeds (below and in testdata/fuzz/<target>).

// seedEvents are records of every kind, both families.
func seedEvents() []Event {
	v4l, v4r := netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:80")
	v6l, v6r := netip.MustParseAddrPort("[fd00::1]:40000"), netip.MustParseAddrPort("[fd00::2]:443")
	var out []Event
	for k := KindState; k < kindUpperBound; k++ {
		ev := Event{Mono: time.Duration(k) * time.Second, Kind: k, Cookie: uint64(k) + 1, Local: v4l, Remote: v4r,
			NetNS: 4026531840, PID: 42, State: tcp.StateEstablished, RTO: 200 * time.Millisecond}
		ev.SetComm("curl")
		out = append(out, ev)
		ev.Local, ev.Remote = v6l, v6r
		out = append(out, ev)
	}
	return out
}

// Any bytes: Decode rejects or decodes without panicking, and what it
// decodes survives Encode and Decode again unchanged.
func FuzzDecode(f *testing.F) {
	for _, ev := range seedEvents() {
		f.Add(Encode(&ev))
	}
	f.Add([]byte{})
	f.Add(make([]byte, recordSize-1))
	clock := NewClock(0, time.Unix(1_800_000_000, 0))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var ev Event
		if err := Decode(raw, clock, &ev); err != nil {
			if len(raw) >= recordSize {
				t.Fatalf("a record of %d bytes rejected: %v", len(raw), err)
			}
			return
		}
		_ = ev.Kind.String()
		_, _, _ = ev.Comm(), ev.ExitSignal(), ev.ExitStatus()
		var again Event
		if err := Decode(Encode(&ev), clock, &again); err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		if again != ev {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, again)
		}
	})
}

// Any text: ReadRecording returns events or an error, never panics; the
// events it returns, written again, read back the same.
func FuzzReadRecording(f *testing.F) {
	var rec bytes.Buffer
	rec.WriteString("# host A netns 1\n\n")
	for _, ev := range seedEvents() {
		WriteRecord(&rec, &ev)
	}
	f.Add(rec.String())
	f.Add("# only a comment\n")
	f.Add("zz\n")
	f.Add(strings.Repeat("0", 2*recordSize) + "\n")
	epoch := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, text string) {
		evs, err := ReadRecording(strings.NewReader(text), epoch)
		if err != nil {
			return
		}
		var out bytes.Buffer
		for i := range evs {
			if err := WriteRecord(&out, &evs[i]); err != nil {
				t.Fatal(err)
			}
		}
		again, err := ReadRecording(&out, epoch)
		if err != nil || len(again) != len(evs) {
			t.Fatalf("rewritten recording: %d events, %v; want %d", len(again), err, len(evs))
		}
		for i := range evs {
			if again[i] != evs[i] {
				t.Fatalf("event %d changed:\n%+v\n%+v", i, evs[i], again[i])
			}
		}
	})
}

// Encode takes any event a test or a replay builds, including one with no
// address or with one address of each family (#10.9: it panicked).
func TestEncodeWithoutAddress(t *testing.T) {
	clock := NewClock(0, time.Unix(0, 0))
	for _, ev := range []Event{
		{Kind: KindState},
		{Kind: KindSendReset, Local: netip.MustParseAddrPort("10.0.0.1:1")},
		{Kind: KindSendReset, Remote: netip.MustParseAddrPort("[fd00::2]:2")},
		{Kind: KindRecvReset, Local: netip.MustParseAddrPort("10.0.0.1:1"), Remote: netip.MustParseAddrPort("[fd00::2]:2")},
	} {
		var got Event
		if err := Decode(Encode(&ev), clock, &got); err != nil {
			t.Fatal(err)
		}
		if got.Local.Port() != ev.Local.Port() || got.Remote.Port() != ev.Remote.Port() {
			t.Errorf("ports %v %v, want %v %v", got.Local, got.Remote, ev.Local, ev.Remote)
		}
	}
}
