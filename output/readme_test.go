package output

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// The example lines of docs/verdicts.md are real output: the lab's
// recordings replayed through the tracker and this package. This test
// fails when they drift from what the code prints; UPDATE_README=1
// rewrites them. The README names every verdict and docs/verdicts.md
// explains each: TestVerdictsAreDocumented keeps both lists whole.

// exampleOf names, per verdict, the recording and host whose narrative
// docs/verdicts.md shows.
type exampleRef struct {
	verdict   tracker.Verdict
	recording string
	host      string
	all       bool
}

var exampleOf = []exampleRef{
	{tracker.PeerClosed, "process-crash", "A", false},
	{tracker.LocalClosed, "timewait-reuse", "A", true},
	{tracker.LocalProcessExited, "process-crash", "B", false},
	{tracker.PeerReset, "process-crash-unread", "A", false},
	{tracker.PeerLostState, "host-reboot", "A", false},
	{tracker.RetransmitTimeout, "host-down", "A", false},
	{tracker.HostUnreachable, "router-unreachable", "A", false},
	{tracker.KeepaliveTimeout, "keepalive-dead", "A", false},
	{tracker.LocalAbort, "local-abort-unread", "A", false},
	{tracker.ConnectRefused, "connect-refused", "A", false},
	{tracker.ConnectTimeout, "connect-timeout", "A", false},
	{tracker.ConnectAbandoned, "connect-abandoned", "A", false},
	{tracker.Stalled, "host-down", "A", false},
	{tracker.Recovered, "cable-replug", "A", false},
	{tracker.KeepaliveProbing, "keepalive-dead", "A", false},
	{tracker.CloseWaitStuck, "close-wait-stuck", "B", false},
	{tracker.LocalPortsExhausted, "local-ports-exhausted", "A", false},
	{tracker.ZeroWindow, "peer-stops-reading", "A", false},
}

// replayFor returns the first narrative with verdict v for host in a
// recording.
func replayFor(t *testing.T, name, host string, v tracker.Verdict, all bool) *tracker.Narrative {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "tracer", "tracker", "testdata", name+".hex"))
	if err != nil {
		t.Fatal(err)
	}
	var netns uint32
	var closeWaitAfter time.Duration // the threshold the lab ran with
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 5 && f[0] == "#" && f[1] == "host" && f[2] == host {
			n, _ := strconv.ParseUint(f[4], 10, 32)
			netns = uint32(n)
		}
		if len(f) == 3 && f[0] == "#" && f[1] == "close-wait-after" {
			closeWaitAfter, _ = time.ParseDuration(f[2])
		}
	}
	// The recordings' clock starts at a fixed wall time, so the examples
	// are stable.
	evs, err := wire.ReadRecording(bytes.NewReader(raw), time.Date(2026, 11, 21, 3, 12, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	var found *tracker.Narrative
	tr := tracker.New(tracker.Config{All: all, ResetReasons: tcp.FallbackResetReasons, CloseWaitAfter: closeWaitAfter}, func(n *tracker.Narrative) {
		if found == nil && n.Verdict == v && n.NetNS == netns {
			cp := *n
			found = &cp
		}
	})
	scans, err := tracker.ReadCloseWaitScans(raw)
	if err != nil {
		t.Fatal(err)
	}
	var last time.Duration
	for i := range evs {
		for len(scans) > 0 && scans[0].Mono <= evs[i].Mono {
			tr.CloseWaitScan(scans[0].Mono, scans[0].Stuck)
			scans = scans[1:]
		}
		tr.Handle(&evs[i])
		last = evs[i].Mono
	}
	for _, s := range scans {
		tr.CloseWaitScan(s.Mono, s.Stuck)
		last = max(last, s.Mono)
	}
	tr.Flush(last + time.Second)
	if found == nil {
		t.Fatalf("%s: no %s for host %s", name, v, host)
	}
	return found
}

// trimmed drops the long fields of a JSON narrative, keeping the order.
func trimmed(t *testing.T, line []byte) string {
	t.Helper()
	drop := map[string]bool{"cookie": true, "family": true, "netns": true, "inode": true, "rtos_ms": true,
		"explanation": true, "timeline": true, "settings": true}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.Token() // {
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for dec.More() {
		tok, _ := dec.Token()
		key := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if drop[key] {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&b, "%q:%s", key, v)
	}
	b.WriteByte('}')
	return b.String()
}

func renderExamples(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	var full *tracker.Narrative
	for _, ex := range exampleOf {
		n := replayFor(t, ex.recording, ex.host, ex.verdict, ex.all)
		var text, js bytes.Buffer
		if err := NewWriter(&text, Text, Options{}).Narrative(n, containers.Info{}); err != nil {
			t.Fatal(err)
		}
		if err := NewWriter(&js, JSON, Options{Host: "node-1"}).Narrative(n, containers.Info{}); err != nil {
			t.Fatal(err)
		}
		heading := "### `" + string(ex.verdict) + "`"
		if ex.all {
			heading += " (with `--all`)"
		}
		fmt.Fprintf(&b, "%s\n\n```\n%s%s\n```\n\n", heading, text.String(), trimmed(t, bytes.TrimSpace(js.Bytes())))
		if ex.verdict == tracker.RetransmitTimeout {
			full = n
		}
	}
	rec := NewNarrativeRecord(full, containers.Info{})
	rec.Host = "node-1"
	pretty, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "A complete JSON narrative (pretty-printed here; tcpwatch writes one line):\n\n```json\n%s\n```\n\n", pretty)
	return b.String()
}

// The examples sit between these two lines of docs/verdicts.md.
const (
	examplesBegin = "<!-- examples: written from the recordings by output/readme_test.go (UPDATE_README=1) -->\n"
	examplesEnd   = "<!-- end of examples -->\n"
)

func TestDocsExamplesAreCurrent(t *testing.T) {
	path := filepath.Join("..", "docs", "verdicts.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i, j := strings.Index(s, examplesBegin), strings.Index(s, examplesEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no examples between %q and %q", path, examplesBegin, examplesEnd)
	}
	i += len(examplesBegin)
	want := "\n" + renderExamples(t)
	if s[i:j] == want {
		return
	}
	if os.Getenv("UPDATE_README") == "1" {
		if err := os.WriteFile(path, []byte(s[:i]+want+s[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s: the example lines differ from what tcpwatch prints for the recordings: run UPDATE_README=1 go test -run TestDocsExamplesAreCurrent ./output/", path)
}

// TestVerdictsAreDocumented: the README's list of verdicts and the tables
// of docs/verdicts.md name exactly the registered verdicts.
func TestVerdictsAreDocumented(t *testing.T) {
	known := map[string]bool{}
	for _, v := range words.Verdicts(nil) {
		known[string(v)] = true
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// The paragraph that begins "The verdicts:" names them in backquotes.
	para := string(readme)
	i := strings.Index(para, "\nThe verdicts: ")
	if i < 0 {
		t.Fatal(`README.md has no paragraph beginning "The verdicts: "`)
	}
	para = para[i+1:]
	if j := strings.Index(para, "\n\n"); j >= 0 {
		para = para[:j]
	}
	checkNames(t, "README.md's list of verdicts", backquoted(para), known)

	doc, err := os.ReadFile(filepath.Join("..", "docs", "verdicts.md"))
	if err != nil {
		t.Fatal(err)
	}
	// A row of a verdict table starts with the verdict in backquotes.
	var rows []string
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "| `") {
			rows = append(rows, backquoted(line)[0])
		}
	}
	checkNames(t, "docs/verdicts.md's tables", rows, known)
}

// backquoted returns the `quoted` words of s, in order.
func backquoted(s string) []string {
	var words []string
	parts := strings.Split(s, "`")
	for i := 1; i < len(parts); i += 2 {
		words = append(words, parts[i])
	}
	return words
}

func checkNames(t *testing.T, where string, names []string, known map[string]bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, n := range names {
		if !known[n] {
			t.Errorf("%s names %q, which is no verdict", where, n)
		}
		if seen[n] {
			t.Errorf("%s names %q twice", where, n)
		}
		seen[n] = true
	}
	for v := range known {
		if !seen[v] {
			t.Errorf("%s does not name the verdict %q", where, v)
		}
	}
}

// withoutExample are the registered verdicts no recording shows: no lab
// scenario loses the kernel's records on purpose.
// accept_queue_overflow and synack_unanswered come from readings of the
// listeners (sock_diag, the kernel half's SYN-ACK map), not from kernel
// records: a recording cannot replay them.
var withoutExample = map[tracker.Verdict]bool{tracker.Untold: true, tracker.AcceptQueueOverflow: true, tracker.SynackUnanswered: true}

// Every registered verdict is cited in the documentation (the README or
// docs/) and, unless no recording can show it, has a real example there.
func TestEveryVerdictIsDocumented(t *testing.T) {
	docs := []string{filepath.Join("..", "README.md")}
	more, err := filepath.Glob(filepath.Join("..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for _, p := range append(docs, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		text.Write(b)
	}
	for _, v := range words.Verdicts(nil) {
		if !strings.Contains(text.String(), "`"+string(v)+"`") {
			t.Errorf("the verdict %s is cited nowhere in README.md or docs/", v)
		}
		example := slices.ContainsFunc(exampleOf, func(ex exampleRef) bool { return ex.verdict == v })
		if example == withoutExample[v] {
			t.Errorf("%s: has an example %v, expected to have none %v", v, example, withoutExample[v])
		}
	}
}

// Every registered verdict's text line is in the colour of its severity.
func TestEveryVerdictIsColoured(t *testing.T) {
	for _, e := range words.Registry {
		var buf bytes.Buffer
		n := &tracker.Narrative{Verdict: e.Verdict, Final: !e.Episode}
		if err := NewWriter(&buf, Text, Options{Color: true}).Narrative(n, containers.Info{}); err != nil {
			t.Fatal(err)
		}
		want := map[words.Severity]string{words.Normal: ansiGreen, words.Warning: ansiYellow, words.Failure: ansiRed}[e.Severity]
		if !strings.Contains(buf.String(), want+string(e.Verdict)) {
			t.Errorf("%s (%s) is not coloured %q: %q", e.Verdict, e.Severity, want, buf.String())
		}
	}
}

// Every field of the stats and loss records (and of their skipped
// object) is named in docs/json.md.
func TestStatsAndLossFieldsAreDocumented(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "docs", "json.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for _, v := range []any{StatsRecord{}, LossRecord{}, Skipped{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if name == "" || name == "-" || name == "type" {
				continue
			}
			if !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("%s.%s: `%s` is not in docs/json.md", typ.Name(), typ.Field(i).Name, name)
			}
		}
	}
}
