package engine_test

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// The churn recordings are what the kernel sent tcpwatch --all during 200
// loopback connections to port 47311 (see their first lines), both ends of
// each: every record (12 a connection, as --all sent them before issue
// #21 and --events still does), and each normal lifecycle summarised in
// the kernel (2 a connection: bpf/lifecycle.h), as --all sends them now.
var churnRecordings = []struct{ name, path string }{
	{"summary", "testdata/churn200-summary.rec.gz"},
	{"every-record", "testdata/churn200.rec.gz"},
}

// loadRecording reads a recording's raw records (as the ring buffer hands
// them over: the replay decodes each, as the real reader does).
func loadRecording(tb testing.TB, path string) [][]byte {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	var raw [][]byte
	sc := bufio.NewScanner(gz)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil {
			tb.Fatal(err)
		}
		raw = append(raw, b)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(raw) == 0 {
		tb.Fatalf("%s: no records", path)
	}
	return raw
}

// replaySource hands out a recording's records as fast as the engine takes
// them, again and again until limit records: each pass is a new set of
// connections (cookies moved out of the previous passes' way, ephemeral
// ports moved on as the kernel's allocator moves on) and comes right after
// the previous one in time, the recording's timestamps compressed so that
// the connections come at pace per second, as from the churn of a host
// that fast: what the tracker keeps per second (TIME_WAIT 4-tuples, the
// narratives in their grace period) is then what it keeps there.
type replaySource struct {
	raw     [][]byte
	limit   int
	served  int
	first   time.Duration // the recording's first timestamp
	scale   float64       // recorded time to replayed time
	pass    time.Duration // one pass, replayed
	base    time.Duration // where the first pass starts
	conns   int           // connections in one pass
	service uint16        // the port that is not ephemeral
	clock   wire.Clock
	stopped bool
}

// churnPace is the loopback churn of the 16-core host of issue #21.
const churnPace = 66000

func newReplaySource(tb testing.TB, raw [][]byte, limit, conns int, service uint16, pace float64) *replaySource {
	tb.Helper()
	var first, last wire.Event
	clock := wire.NewClock(wire.MonotonicNow(), time.Now())
	if err := wire.Decode(raw[0], clock, &first); err != nil {
		tb.Fatal(err)
	}
	if err := wire.Decode(raw[len(raw)-1], clock, &last); err != nil {
		tb.Fatal(err)
	}
	pass := time.Duration(float64(conns) / pace * float64(time.Second))
	return &replaySource{raw: raw, limit: limit, first: first.Mono, pass: pass,
		scale: float64(pass) / float64(last.Mono-first.Mono+1), base: wire.MonotonicNow(),
		conns: conns, service: service, clock: clock}
}

func (s *replaySource) Read(ev *wire.Event) error {
	if s.stopped || s.served >= s.limit {
		return tracer.ErrClosed
	}
	pass, i := s.served/len(s.raw), s.served%len(s.raw)
	s.served++
	if err := wire.Decode(s.raw[i], s.clock, ev); err != nil {
		return err
	}
	at := func(mono time.Duration) time.Duration {
		return s.base + time.Duration(pass)*s.pass + time.Duration(float64(mono-s.first)*s.scale)
	}
	ev.Mono = at(ev.Mono)
	if ev.FirstSeen != 0 {
		ev.FirstSeen = at(ev.FirstSeen)
	}
	ev.Time = s.clock.Wall(ev.Mono)
	for i := range ev.Life.Steps {
		ev.Life.Step[i].Mono = at(ev.Life.Step[i].Mono)
	}
	ev.Cookie += uint64(pass) << 40
	// Each pass in a namespace of its own: the same 4-tuples again within
	// a minute would be TIME_WAIT 4-tuples reopened (time_wait_syn_accepted
	// notices), which the live run never saw.
	ev.NetNS += uint32(pass)
	ev.Local = s.movePort(ev.Local, pass)
	ev.Remote = s.movePort(ev.Remote, pass)
	return nil
}

// movePort moves an ephemeral port on by a pass's connections, within
// 1024-65535.
func (s *replaySource) movePort(ap netip.AddrPort, pass int) netip.AddrPort {
	p := ap.Port()
	if p == s.service || p < 1024 {
		return ap
	}
	const span = 65536 - 1024
	return netip.AddrPortFrom(ap.Addr(), uint16(1024+(int(p)-1024+pass*s.conns)%span))
}

func (s *replaySource) SetDeadline(time.Time)          {}
func (s *replaySource) Buffered() bool                 { return !s.stopped && s.served < s.limit }
func (s *replaySource) Losses() (tracer.Losses, error) { return tracer.Losses{}, nil }
func (s *replaySource) Stop() error                    { s.stopped = true; return nil }
func (s *replaySource) ResetReasons() tcp.ResetReasons { return tcp.FallbackResetReasons }

// countingWriter counts what the output would have written.
type countingWriter struct{ bytes, lines int }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.bytes += len(p)
	for _, c := range p {
		if c == '\n' {
			w.lines++
		}
	}
	return len(p), nil
}

// replay runs an --all engine over limit records of raw into JSON output.
func replay(tb testing.TB, raw [][]byte, limit int, opts output.Options) (engine.Stats, *countingWriter) {
	tb.Helper()
	src := newReplaySource(tb, raw, limit, 200, 47311, churnPace)
	out := &countingWriter{}
	opts.Batch = true
	w := output.NewWriter(out, output.JSON, opts)
	e := engine.New(src, engine.Config{Mode: engine.ModeAll, NoExisting: true, ReconcileEvery: -1})
	stats, err := e.Run(context.Background(), w)
	if err != nil {
		tb.Fatal(err)
	}
	return stats, out
}

// The replay is the real engine's work: every end of every connection of
// the recording is narrated once per pass, as the live run narrated it.
func TestReplayNarratesEveryEnd(t *testing.T) {
	for _, rec := range churnRecordings {
		t.Run(rec.name, func(t *testing.T) { replayNarratesEveryEnd(t, loadRecording(t, rec.path)) })
	}
}

func replayNarratesEveryEnd(t *testing.T, raw [][]byte) {
	stats, out := replay(t, raw, 3*len(raw), output.Options{})
	if stats.Events != uint64(3*len(raw)) {
		t.Errorf("%d records read, want %d", stats.Events, 3*len(raw))
	}
	want := map[string]int{"local_closed": 600, "peer_closed": 600}
	for v, n := range want {
		if stats.Narratives[v] != n {
			t.Errorf("%s told %d times, want %d (all: %v)", v, stats.Narratives[v], n, stats.Narratives)
		}
	}
	if len(stats.Narratives) != len(want) {
		t.Errorf("narratives: %v, want only %v", stats.Narratives, want)
	}
	if out.lines != 1200 {
		t.Errorf("%d lines written, want 1200", out.lines)
	}
	t.Logf("%d records, %d lines, %d bytes (%.0f a line)", stats.Events, out.lines, out.bytes, float64(out.bytes)/float64(out.lines))
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplayAll replays a churn recording through an --all engine
// into JSON output as fast as one reader can, its timestamps paced as a
// churn of churnPace connections a second: the user-space half of
// tcpwatch --all on the 16-core host of issue #21, without the kernel.
// One op is one record. It reports the sustainable rate of the one reader
// (records/s, conns/s: each connection is both its ends) and the same per
// CPU-second of the whole process (conns/cpu-s: the garbage collector's
// work on other cores included), and the output's bytes per connection.
// summary is what --all reads now (a normal lifecycle summarised in the
// kernel, 2 records a connection), every-record what it read before (12);
// short is the default output (a normal lifecycle in its short form),
// explain is --explain (every narrative's full record).
func BenchmarkReplayAll(b *testing.B) {
	for _, rec := range churnRecordings {
		raw := loadRecording(b, rec.path)
		for _, bc := range []struct {
			name string
			opts output.Options
		}{{"short", output.Options{}}, {"explain", output.Options{Explain: true}}} {
			b.Run(rec.name+"/"+bc.name, func(b *testing.B) { benchmarkReplay(b, raw, bc.opts) })
		}
	}
}

func benchmarkReplay(b *testing.B, raw [][]byte, opts output.Options) {
	recordsPerConn := float64(len(raw)) / 200
	// As the command sets it for --all (GOGC, GOMEMLIMIT override it
	// there and here).
	gcPercent, memoryLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	defer debug.SetGCPercent(gcPercent)
	defer debug.SetMemoryLimit(memoryLimit)
	debug.SetGCPercent(gcPercent)
	engine.TuneGC(engine.ModeAll, os.Getenv)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, wall0 := cpuTime(), time.Now()
	stats, out := replay(b, raw, b.N, opts)
	wall, cpu := time.Since(wall0), cpuTime()-cpu0
	b.StopTimer()
	conns := float64(stats.Events) / recordsPerConn
	b.ReportMetric(float64(stats.Events)/wall.Seconds(), "records/s")
	b.ReportMetric(conns/wall.Seconds(), "conns/s")
	b.ReportMetric(conns/cpu.Seconds(), "conns/cpu-s")
	if conns >= 1 {
		b.ReportMetric(float64(out.bytes)/conns, "bytes/conn")
	}
}

var _ io.Writer = (*countingWriter)(nil)
