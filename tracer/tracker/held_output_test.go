package tracker_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// What tcpwatch writes of a normal end held compact (held.go) is what it
// writes of it held whole, byte for byte: text and JSON, short and
// --explain, for the churn recordings and every recorded scenario, as
// recorded and summarised.
func TestHeldEndsWriteTheSame(t *testing.T) {
	type mode struct {
		name   string
		format output.Format
		opts   output.Options
	}
	modes := []mode{{"text", output.Text, output.Options{}}, {"text --explain", output.Text, output.Options{Explain: true}},
		{"json", output.JSON, output.Options{Host: "h"}}, {"json --explain", output.JSON, output.Options{Host: "h", Explain: true}}}
	write := func(holdWhole bool) map[string][]string {
		var buf bytes.Buffer
		writers := make([]*output.Writer, len(modes))
		for i, m := range modes {
			writers[i] = output.NewWriter(&buf, m.format, m.opts)
		}
		out := map[string][]string{}
		tracker.TellEveryRecording(t, holdWhole, func(name string, n *tracker.Narrative) {
			for i, w := range writers {
				buf.Reset()
				if err := w.Narrative(n, containers.Info{}); err != nil {
					t.Fatal(err)
				}
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
				k := name + " / " + modes[i].name
				out[k] = append(out[k], buf.String())
			}
		})
		return out
	}
	whole, compact := write(true), write(false)
	lines := 0
	for k, want := range whole {
		got := compact[k]
		// (The folds of connect() failures are told in map order at one
		// time: the order is TestHeldEndsTellTheSame's to check.)
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			for i := range min(len(got), len(want)) {
				if got[i] != want[i] {
					t.Fatalf("%s: written differently held compact:\n%s\nheld whole:\n%s", k, got[i], want[i])
				}
			}
			t.Fatalf("%s: %d narratives written held compact, %d held whole", k, len(got), len(want))
		}
		for _, s := range want {
			lines += bytes.Count([]byte(s), []byte("\n"))
		}
	}
	if len(compact) != len(whole) || lines < 4000 {
		t.Fatalf("%d streams and modes written held compact, %d held whole, %d lines", len(compact), len(whole), lines)
	}
	t.Logf("%d streams and modes, %d lines the same", len(whole), lines)
}
