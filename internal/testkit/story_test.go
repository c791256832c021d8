package testkit

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// recordingTB keeps what a checker reports instead of failing.
type recordingTB struct {
	testing.TB
	errs []string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestOneStory(t *testing.T) {
	told := func(n Told) Told { return n }
	ok := []Told{{Conn: "a", Verdict: "stalled"}, {Conn: "b", Verdict: "peer_reset", Final: true},
		{Conn: "a", Verdict: "retransmit_timeout", Final: true}}
	r := &recordingTB{TB: t}
	OneStory(r, "host", ok, told)
	if len(r.errs) != 0 {
		t.Errorf("a good story reported %v", r.errs)
	}
	bad := append(ok, Told{Conn: "a", Verdict: "recovered"}, Told{Conn: "b", Verdict: "peer_closed", Final: true})
	r = &recordingTB{TB: t}
	OneStory(r, "host", bad, told)
	if len(r.errs) != 2 || !strings.Contains(r.errs[0], "recovered (final=false) told after the final retransmit_timeout") {
		t.Errorf("two lines after a final reported %q", r.errs)
	}
}

func TestInTimeOrder(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	told := func(n Told) Told { return n }
	r := &recordingTB{TB: t}
	InTimeOrder(r, "host", []Told{{Time: t0}, {Time: t0}, {Time: t0.Add(time.Millisecond)}}, told)
	if len(r.errs) != 0 {
		t.Errorf("lines in order reported %v", r.errs)
	}
	InTimeOrder(r, "host", []Told{{Time: t0.Add(time.Second)}, {Conn: "x", Verdict: "stalled", Time: t0}}, told)
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "host x: stalled") {
		t.Errorf("a line out of order reported %q", r.errs)
	}
}

func TestJSONLines(t *testing.T) {
	type rec struct {
		Type string `json:"type"`
		N    int    `json:"n"`
	}
	text := `{"type":"narrative","n":1}
tcpwatch: a line of stderr
{"type":"stats","n":2}
{"type":"narrative","n":3}
{"type":"narr`
	got := JSONLines(text, func(r rec) bool { return r.Type == "narrative" })
	if len(got) != 2 || got[0].N != 1 || got[1].N != 3 {
		t.Errorf("got %+v, want the narratives 1 and 3", got)
	}
	if all := JSONLines[rec](text, nil); len(all) != 3 {
		t.Errorf("nil keep kept %d lines, want 3", len(all))
	}
}
