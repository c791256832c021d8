package otlp

import (
	"context"
	"io"
	"net/netip"
	"testing"
	"time"

	sdklog "go.opentelemetry.io/otel/sdk/log"

	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

func benchNarrative() *tracker.Narrative {
	return &tracker.Narrative{Time: time.Now(), Verdict: tracker.RetransmitTimeout, Final: true, Cookie: 7,
		Local: netip.MustParseAddrPort("10.0.0.1:40000"), Remote: netip.MustParseAddrPort("10.0.0.2:5432"),
		Errno: 110, Retransmits: 6, RTOs: []time.Duration{time.Second, 2 * time.Second},
		Timeline: []tracker.Step{{At: time.Millisecond}, {At: time.Second}}, Settings: tcp.Settings{Retries2: 15}}
}

// BenchmarkJSONLine is the same narrative as a v1 JSON line, for scale.
func BenchmarkJSONLine(b *testing.B) {
	w := output.NewWriter(io.Discard, output.JSON, output.Options{})
	n := benchNarrative()
	b.ReportAllocs()
	for b.Loop() {
		w.Narrative(n, containers.Info{})
	}
}

type discard struct{}

func (discard) Export(context.Context, []sdklog.Record) error { return nil }
func (discard) Shutdown(context.Context) error                { return nil }
func (discard) ForceFlush(context.Context) error              { return nil }

// BenchmarkNarrative is what --otlp costs the engine's goroutine per
// narrative: the record, its attributes, the SDK's record and the copy
// into the queue (the export itself runs on another goroutine).
func BenchmarkNarrative(b *testing.B) {
	q := newQueue(discard{}, 1<<20, 512, time.Millisecond, time.Second)
	e := &Exporter{queue: q}
	e.logs = sdklog.NewLoggerProvider(sdklog.WithProcessor(q), sdklog.WithAllowKeyDuplication())
	e.logger = e.logs.Logger("bench")
	n := benchNarrative()
	b.ReportAllocs()
	for b.Loop() {
		e.Narrative(n, containers.Info{})
	}
	b.StopTimer()
	e.logs.Shutdown(context.Background())
}

// BenchmarkLifecycle is a normal close under --all: the commonest
// narrative on a busy host.
func BenchmarkLifecycle(b *testing.B) {
	q := newQueue(discard{}, 1<<20, 512, time.Millisecond, time.Second)
	e := &Exporter{queue: q}
	e.logs = sdklog.NewLoggerProvider(sdklog.WithProcessor(q), sdklog.WithAllowKeyDuplication())
	e.logger = e.logs.Logger("bench")
	n := benchNarrative()
	n.Verdict, n.Errno, n.Retransmits, n.RTOs = tracker.LocalClosed, 0, 0, nil
	b.ReportAllocs()
	for b.Loop() {
		e.Narrative(n, containers.Info{})
	}
	b.StopTimer()
	e.logs.Shutdown(context.Background())
}
