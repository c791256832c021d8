package output

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Every notice of the registry is cited in the README or docs/.
func TestEveryNoticeIsDocumented(t *testing.T) {
	var text strings.Builder
	paths, _ := filepath.Glob(filepath.Join("..", "docs", "*.md"))
	for _, p := range append(paths, filepath.Join("..", "README.md")) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		text.Write(b)
	}
	for _, e := range words.Notices {
		if !strings.Contains(text.String(), "`"+e.Kind+"`") {
			t.Errorf("the notice %s is cited nowhere in README.md or docs/", e.Kind)
		}
	}
}

// A rejected SYN's JSON carries the figures that decided it (docs/json.md).
func TestTimeWaitNoticeJSON(t *testing.T) {
	n := &tracker.Notice{Time: time.Unix(0, 0), Kind: tracker.NoticeTimeWaitSynRejected, Age: 10 * time.Millisecond,
		TimeWait: wire.TimeWaitFacts{Seen: wire.TimeWaitSynAnswered, Seq: 100, RcvNxt: 400, Left: 59990 * time.Millisecond}}
	var buf bytes.Buffer
	if err := NewWriter(&buf, JSON, Options{}).Notice(n, containers.Info{}); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Kind     string          `json:"kind"`
		Summary  string          `json:"summary"`
		TimeWait *TimeWaitRecord `json:"time_wait"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	want := TimeWaitRecord{Seq: 100, RcvNxt: 400, SeqAhead: -300, Answered: true, LeftMs: 59990, ClosedMs: 10}
	if rec.Kind != tracker.NoticeTimeWaitSynRejected || rec.TimeWait == nil || *rec.TimeWait != want ||
		!strings.Contains(rec.Summary, "300 behind the old connection's next (tw_rcv_nxt 400)") {
		t.Errorf("%s", buf.String())
	}
}

// --events shows a TIME_WAIT record with its figures, no socket's.
func TestTimeWaitEvent(t *testing.T) {
	ev := &wire.Event{Kind: wire.KindTimeWait, Time: time.Unix(0, 0), NetNS: 7, Cookie: 0x2a,
		TimeWait: wire.TimeWaitFacts{Seen: wire.TimeWaitRstEnded, Seq: 400, RcvNxt: 400, Left: 59 * time.Second}}
	var text, js bytes.Buffer
	if err := NewWriter(&text, Text, Options{}).Event(ev, nil, containers.Info{}); err != nil {
		t.Fatal(err)
	}
	if err := NewWriter(&js, JSON, Options{}).Event(ev, nil, containers.Info{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "time_wait     invalid AddrPort > invalid AddrPort TIME_WAIT rst_ended seq=400 rcv_nxt=400 seq_ahead=0 tcp_rfc1337=false left=59s netns=7 sk=2a") {
		t.Errorf("text: %s", text.String())
	}
	var rec struct {
		Seen     string          `json:"time_wait_seen"`
		State    string          `json:"state"`
		TimeWait *TimeWaitRecord `json:"time_wait"`
	}
	if err := json.Unmarshal(js.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Seen != "rst_ended" || rec.TimeWait == nil || rec.TimeWait.LeftMs != 59000 {
		t.Errorf("json: %s", js.String())
	}
}
