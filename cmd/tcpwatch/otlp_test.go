package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/cgroups"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/lab"
	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/output/communityid"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// The OpenTelemetry Collector the OTLP tests send to: the real one, built
// from its Go modules (lab/otelcol, a module of its own) with the OTLP
// receiver and the file exporter. Built once per test binary; the Go
// build cache makes later builds quick.
var (
	collectorOnce sync.Once
	collectorPath string
	collectorErr  error
)

// removeCollector removes the built collector (TestMain, at the end).
func removeCollector() {
	if collectorPath != "" {
		os.RemoveAll(filepath.Dir(collectorPath))
	}
}

func buildCollector(t *testing.T) string {
	t.Helper()
	collectorOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tcpwatch-otelcol-")
		if err != nil {
			collectorErr = err
			return
		}
		collectorPath = filepath.Join(dir, "otelcol")
		src, _ := filepath.Abs(filepath.Join("..", "..", "lab", "otelcol"))
		cmd := exec.Command("go", "build", "-o", collectorPath, ".")
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			collectorErr = fmt.Errorf("building the collector in %s: %v\n%s", src, err, out)
		}
	})
	if collectorErr != nil {
		t.Fatal(collectorErr)
	}
	return collectorPath
}

// collector is a running Collector and where it writes what it received.
type collector struct {
	cmd           *exec.Cmd
	grpc, http    string // host:port of its OTLP receivers
	logs, metrics string // its file exporters' files
	stderr        bytes.Buffer
	stopped       bool
	exited        chan struct{} // closed when the process has ended
	cert          string        // its TLS certificate (PEM), with TLS
	dir, exe      string
}

// startCollector runs the Collector on two free loopback ports: OTLP/gRPC
// and OTLP/HTTP in, logs and metrics each to a file of OTLP JSON lines.
// Its own telemetry is off: nothing else listens.
func startCollector(t *testing.T) *collector { return startCollectorTLS(t, false) }

// startCollectorTLS is startCollector with, when tls, both receivers
// behind TLS with a certificate of their own for 127.0.0.1, whose PEM is
// in c.cert.
func startCollectorTLS(t *testing.T, tls bool) *collector {
	t.Helper()
	c := &collector{exe: buildCollector(t), dir: t.TempDir()}
	c.grpc = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.http = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.logs, c.metrics = filepath.Join(c.dir, "logs.json"), filepath.Join(c.dir, "metrics.json")
	tlsConfig := ""
	if tls {
		c.cert = filepath.Join(c.dir, "cert.pem")
		key := filepath.Join(c.dir, "key.pem")
		writeSelfSigned(t, c.cert, key)
		tlsConfig = fmt.Sprintf(", tls: {cert_file: %q, key_file: %q}", c.cert, key)
	}
	config := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc: {endpoint: %q%s}
      http: {endpoint: %q%s}
exporters:
  file/logs: {path: %q, flush_interval: 100ms}
  file/metrics: {path: %q, flush_interval: 100ms}
service:
  telemetry:
    logs: {level: warn}
    metrics: {level: none}
  pipelines:
    logs: {receivers: [otlp], exporters: [file/logs]}
    metrics: {receivers: [otlp], exporters: [file/metrics]}
`, c.grpc, tlsConfig, c.http, tlsConfig, c.logs, c.metrics)
	path := filepath.Join(c.dir, "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(c.exe, "--config", "file:"+path)
	c.cmd.Stderr = &c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.exited = make(chan struct{})
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() { c.stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for _, addr := range []string{c.grpc, c.http} {
		for {
			conn, err := net.Dial("tcp", addr)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-c.exited:
				t.Fatalf("the collector exited: %s", c.stderr.String())
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("the collector does not listen on %s: %s", addr, c.stderr.String())
			}
		}
	}
	return c
}

// stop ends the collector as an operator would (SIGTERM: it flushes its
// files); kill ends it as a crash does.
func (c *collector) stop(t *testing.T) {
	if c.stopped {
		return
	}
	c.stopped = true
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
		t.Errorf("the collector did not stop in 30s")
	}
}

func (c *collector) kill() {
	if c.stopped {
		return
	}
	c.stopped = true
	c.cmd.Process.Kill()
	<-c.exited
}

// otlpRecord is one log record as the collector wrote it, with its
// attributes decoded.
type otlpRecord struct {
	Resource     map[string]any
	EventName    string
	TimeUnixNano string
	Severity     int
	SeverityText string
	Body         string
	Attrs        map[string]any
}

// anyValue decodes OTLP JSON's AnyValue.
func anyValue(v map[string]json.RawMessage) any {
	for k, raw := range v {
		switch k {
		case "stringValue":
			var s string
			json.Unmarshal(raw, &s)
			return s
		case "intValue":
			var s string // int64 is a string in OTLP JSON
			if json.Unmarshal(raw, &s) != nil {
				s = string(raw)
			}
			n, _ := strconv.ParseInt(s, 10, 64)
			return n
		case "boolValue":
			var b bool
			json.Unmarshal(raw, &b)
			return b
		case "arrayValue":
			var a struct{ Values []map[string]json.RawMessage }
			json.Unmarshal(raw, &a)
			out := []any{}
			for _, x := range a.Values {
				out = append(out, anyValue(x))
			}
			return out
		case "kvlistValue":
			var kv struct{ Values []keyValue }
			json.Unmarshal(raw, &kv)
			return kvMap(kv.Values)
		}
	}
	return nil
}

type keyValue struct {
	Key   string
	Value map[string]json.RawMessage
}

func kvMap(kvs []keyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		m[kv.Key] = anyValue(kv.Value)
	}
	return m
}

// readLogs reads the collector's logs file (one ExportLogsServiceRequest
// per line).
func readLogs(t *testing.T, path string) []otlpRecord {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []otlpRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var req struct {
			ResourceLogs []struct {
				Resource  struct{ Attributes []keyValue }
				ScopeLogs []struct {
					LogRecords []struct {
						TimeUnixNano   string
						EventName      string
						SeverityNumber int
						SeverityText   string
						Body           map[string]json.RawMessage
						Attributes     []keyValue
					}
				}
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			t.Fatalf("collector's logs file: %v", err)
		}
		for _, rl := range req.ResourceLogs {
			res := kvMap(rl.Resource.Attributes)
			for _, sl := range rl.ScopeLogs {
				for _, lr := range sl.LogRecords {
					body, _ := anyValue(lr.Body).(string)
					out = append(out, otlpRecord{Resource: res, EventName: lr.EventName, TimeUnixNano: lr.TimeUnixNano,
						Severity: lr.SeverityNumber, SeverityText: lr.SeverityText, Body: body, Attrs: kvMap(lr.Attributes)})
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// readMetricPoints reads the collector's metrics file: the latest value
// of each metric's data points, by their attributes.
func readMetricPoints(t *testing.T, path string) map[string]map[string]float64 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		var req struct {
			ResourceMetrics []struct {
				ScopeMetrics []struct {
					Metrics []struct {
						Name  string
						Sum   *struct{ DataPoints []dataPoint }
						Gauge *struct{ DataPoints []dataPoint }
					}
				}
			}
		}
		if err := json.Unmarshal(line, &req); err != nil {
			t.Fatalf("collector's metrics file: %v", err)
		}
		for _, rm := range req.ResourceMetrics {
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					var dps []dataPoint
					if m.Sum != nil {
						dps = m.Sum.DataPoints
					} else if m.Gauge != nil {
						dps = m.Gauge.DataPoints
					}
					for _, dp := range dps {
						if out[m.Name] == nil {
							out[m.Name] = map[string]float64{}
						}
						var labels []string
						for k, v := range kvMap(dp.Attributes) {
							labels = append(labels, fmt.Sprintf("%s=%v", k, v))
						}
						slices.Sort(labels)
						out[m.Name][strings.Join(labels, ",")] = dp.AsDouble
					}
				}
			}
		}
	}
	return out
}

type dataPoint struct {
	Attributes []keyValue
	AsDouble   float64
}

// watchOTLP starts tcpwatch -o json sending to url, quick to export.
func watchOTLP(t *testing.T, url string, env []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := tcpwatch(t, append([]string{"-o", "json", "--otlp", url, "--host-name", "node-otlp"}, args...)...)
	// tcpwatch watches the whole machine here (the lab's namespaces do not
	// exist yet): a queue that holds a burst from other tests too.
	cmd.Env = append(cmd.Env, "OTEL_BLRP_SCHEDULE_DELAY=100", "OTEL_METRIC_EXPORT_INTERVAL=500",
		"OTEL_BLRP_EXPORT_TIMEOUT=2000", "OTEL_EXPORTER_OTLP_TIMEOUT=2000", "OTEL_BLRP_MAX_QUEUE_SIZE=65536")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, cmd.Process.Pid)
	return cmd, &stdout, &stderr
}

// stopWatch ends tcpwatch with SIGINT and returns its narratives in the
// given namespaces and its stats record.
func stopWatch(t *testing.T, cmd *exec.Cmd, stdout, stderr *bytes.Buffer, netns []uint32) ([]output.NarrativeRecord, output.StatsRecord) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tcpwatch: %v: %s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("tcpwatch did not stop within 60s of SIGINT: %s", stderr.String())
	}
	var ns []output.NarrativeRecord
	var stats output.StatsRecord
	for _, line := range strings.Split(stdout.String(), "\n") {
		var head struct{ Type string }
		if json.Unmarshal([]byte(line), &head) != nil {
			continue
		}
		switch head.Type {
		case "narrative":
			var n output.NarrativeRecord
			json.Unmarshal([]byte(line), &n)
			if slices.Contains(netns, n.NetNS) {
				ns = append(ns, n)
			}
		case "stats":
			json.Unmarshal([]byte(line), &stats)
		}
	}
	if stats.OTLP == nil {
		t.Fatalf("no otlp counts in the stats record:\n%s", stdout.String())
	}
	return ns, stats
}

func netnsOf(res *lab.Result) []uint32 {
	var out []uint32
	for _, inodes := range res.NetNS {
		out = append(out, inodes...)
	}
	return out
}

// narrativeKey keys a narrative by its connection, verdict and time (an
// outage tells several stalled narratives of one connection).
func narrativeKey(cookie int64, verdict string, unixNano string) string {
	return fmt.Sprintf("%d/%s/%s", cookie, verdict, unixNano)
}

// TestOTLPToCollector: the lab's scenarios, watched by tcpwatch --otlp,
// arrive in a real Collector as log records, one per narrative, with the
// narrative's fields as the conventions' attributes; and the metrics
// arrive with the figures /metrics serves. Both protocols.
func TestOTLPToCollector(t *testing.T) {
	testkit.RequirePrivileged(t)
	for _, proto := range []string{"http/protobuf", "grpc"} {
		t.Run(strings.ReplaceAll(proto, "/", "-"), func(t *testing.T) {
			c := startCollector(t)
			url := "http://" + c.http
			if proto == "grpc" {
				url = "http://" + c.grpc
			}
			cmd, stdout, stderr := watchOTLP(t, url, []string{"OTEL_EXPORTER_OTLP_PROTOCOL=" + proto})
			var netns []uint32
			for _, sc := range []string{"process-crash", "connect-refused"} {
				res, err := lab.Run(context.Background(), sc, lab.Options{}, func(lab.Record) {})
				if err != nil {
					cmd.Process.Kill()
					t.Fatalf("lab %s: %v", sc, err)
				}
				netns = append(netns, netnsOf(res)...)
			}
			time.Sleep(300 * time.Millisecond)
			told, stats := stopWatch(t, cmd, stdout, stderr, netns)
			c.stop(t) // flushes its files
			o := stats.OTLP
			t.Logf("%s: tcpwatch told %d lab narratives; otlp %+v", proto, len(told), *o)
			if o.Emitted == 0 || o.Exported != o.Emitted || o.Failed != 0 || o.Dropped != 0 || o.MetricExports == 0 || o.MetricExportsFailed != 0 {
				t.Errorf("otlp counts %+v: want every record exported, none failed or dropped, metrics exported", *o)
			}
			got := readLogs(t, c.logs)
			if uint64(len(got)) != o.Exported {
				t.Errorf("the collector received %d log records, tcpwatch counted %d exported", len(got), o.Exported)
			}
			byKey := map[string][]otlpRecord{}
			for _, r := range got {
				if r.Resource["host.name"] != "node-otlp" || r.Resource["service.name"] != "tcpwatch" {
					t.Errorf("resource %v: want host.name node-otlp, service.name tcpwatch", r.Resource)
				}
				ns, _ := r.Attrs["tcpwatch.netns"].(int64)
				if r.EventName != "tcpwatch.narrative" || !slices.Contains(netns, uint32(ns)) {
					continue
				}
				cookie, _ := r.Attrs["tcpwatch.cookie"].(int64)
				verdict, _ := r.Attrs["tcpwatch.verdict"].(string)
				k := narrativeKey(cookie, verdict, r.TimeUnixNano)
				byKey[k] = append(byKey[k], r)
			}
			var verdicts []string
			for _, n := range told {
				verdicts = append(verdicts, n.Verdict)
				ts, _ := time.Parse(output.TimeLayout, n.Time)
				rs := byKey[narrativeKey(int64(n.Cookie), n.Verdict, strconv.FormatInt(ts.UnixNano(), 10))]
				if len(rs) != 1 {
					t.Errorf("narrative %s of cookie %d: %d log records in the collector, want 1", n.Verdict, n.Cookie, len(rs))
					continue
				}
				r := rs[0]
				ap := func(a string, p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(a), p) }
				sev := output.VerdictSeverity(tracker.Verdict(n.Verdict))
				want := map[string]any{
					"network.peer.address": n.RAddr, "network.peer.port": int64(n.RPort),
					"network.local.address": n.LAddr, "network.local.port": int64(n.LPort),
					"network.transport": "tcp", "network.type": n.Family,
					"network.community_id": communityid.Flow(0, communityid.TCP, ap(n.LAddr, n.LPort), ap(n.RAddr, n.RPort)),
					"process.pid":          int64(n.PID), "process.executable.name": n.Comm,
					"tcpwatch.retransmits": int64(n.Retransmits), "tcpwatch.state": n.State,
					"tcpwatch.explanation": n.Explanation,
				}
				if n.Errno != "" {
					want["error.type"] = n.Errno
				}
				for k, v := range want {
					if r.Attrs[k] != v {
						t.Errorf("%s (cookie %d): attribute %s = %v, want %v", n.Verdict, n.Cookie, k, r.Attrs[k], v)
					}
				}
				if r.Body != n.Summary || r.SeverityText != sev.Text || r.Severity != sev.Number {
					t.Errorf("%s: body %q severity %s/%d; want %q %s/%d", n.Verdict, r.Body, r.SeverityText, r.Severity, n.Summary, sev.Text, sev.Number)
				}
				if tl, _ := r.Attrs["tcpwatch.timeline"].([]any); len(tl) != len(n.Timeline) {
					t.Errorf("%s: timeline of %d steps, want %d", n.Verdict, len(tl), len(n.Timeline))
				}
				if r.Attrs["tcpwatch.final"] != n.Final {
					t.Errorf("%s: tcpwatch.final %v, want %v", n.Verdict, r.Attrs["tcpwatch.final"], n.Final)
				}
			}
			for _, v := range []string{"peer_closed", "local_process_exited", "connect_refused"} {
				if !slices.Contains(verdicts, v) {
					t.Errorf("no %s among the lab's narratives %v", v, verdicts)
				}
			}
			if len(byKey) != len(told) {
				t.Errorf("the collector has %d lab narratives, tcpwatch told %d", len(byKey), len(told))
			}
			points := readMetricPoints(t, c.metrics)
			if points["tcpwatch_narratives_total"]["family=ipv4,verdict=connect_refused"] < 1 ||
				points["tcpwatch_records_read_total"][""] < 1 ||
				points["tcpwatch_otlp_log_records_total"]["outcome=exported"] < 1 {
				t.Errorf("metrics in the collector: narratives %v, records read %v, otlp %v",
					points["tcpwatch_narratives_total"], points["tcpwatch_records_read_total"], points["tcpwatch_otlp_log_records_total"])
			}
			if _, ok := points["go_goroutines"]; ok {
				t.Errorf("the Go runtime's metrics were sent: only tcpwatch_* should be")
			}
			if t.Failed() {
				t.Logf("tcpwatch stdout:\n%s\nstderr:\n%s\ncollector:\n%s", stdout, stderr, c.stderr.String())
			}
		})
	}
}

// scrape reads one counter of tcpwatch's /metrics (0 if absent).
func scrape(t *testing.T, addr, series string) float64 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// TestOTLPCollectorDiesMidRun: the collector is killed between two lab
// scenarios. tcpwatch carries on telling the second on stdout, counts
// every record it could not send (stats, /metrics), warns once, and
// still stops promptly at SIGINT.
func TestOTLPCollectorDiesMidRun(t *testing.T) {
	testkit.RequirePrivileged(t)
	c := startCollector(t)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd, stdout, stderr := watchOTLP(t, "http://"+c.http, []string{"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"}, "--metrics", metricsAddr)
	defer func() {
		if t.Failed() {
			t.Logf("tcpwatch stdout:\n%s\nstderr:\n%s\ncollector:\n%s", stdout, stderr, c.stderr.String())
		}
	}()

	first, err := lab.Run(context.Background(), "process-crash", lab.Options{}, func(lab.Record) {})
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("lab: %v", err)
	}
	firstNS := netnsOf(first)
	// Wait until the collector has written the first scenario's stories.
	countIn := func(recs []otlpRecord, netns []uint32) int {
		n := 0
		for _, r := range recs {
			ns, _ := r.Attrs["tcpwatch.netns"].(int64)
			if r.EventName == "tcpwatch.narrative" && slices.Contains(netns, uint32(ns)) {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for countIn(readLogs(t, c.logs), firstNS) < 2 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the collector did not receive the first scenario's narratives in 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.kill() // as a crash: no goodbye, the port closes
	killed := time.Now()
	received := readLogs(t, c.logs)
	// Namespace inodes are reused: the second scenario's are told apart
	// from the first's by time.
	after := func(unixNano int64) bool { return unixNano > killed.UnixNano() }

	second, err := lab.Run(context.Background(), "connect-refused", lab.Options{}, func(lab.Record) {})
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("lab: %v", err)
	}
	secondNS := netnsOf(second)
	// The metrics tell, live, that records are not getting through.
	deadline = time.Now().Add(30 * time.Second)
	for scrape(t, metricsAddr, `tcpwatch_otlp_log_records_total{outcome="failed"}`)+
		scrape(t, metricsAddr, `tcpwatch_otlp_log_records_total{outcome="dropped"}`) < 1 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("/metrics never counted a failed or dropped OTLP record with the collector dead")
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopStart := time.Now()
	told, stats := stopWatch(t, cmd, stdout, stderr, append(append([]uint32(nil), firstNS...), secondNS...))
	o := stats.OTLP
	t.Logf("collector killed after %d of the first scenario's narratives; tcpwatch stopped %v after SIGINT; otlp %+v",
		countIn(received, firstNS), time.Since(stopStart).Round(time.Millisecond), *o)

	var secondTold int
	for _, n := range told {
		ts, _ := time.Parse(output.TimeLayout, n.Time)
		if slices.Contains(secondNS, n.NetNS) && after(ts.UnixNano()) {
			secondTold++
		}
	}
	if secondTold == 0 {
		t.Errorf("tcpwatch told nothing of the second scenario: it did not carry on")
	}
	if o.Emitted != o.Exported+o.Failed+o.Dropped {
		t.Errorf("emitted %d != exported %d + failed %d + dropped %d: records unaccounted for", o.Emitted, o.Exported, o.Failed, o.Dropped)
	}
	if o.Failed+o.Dropped < uint64(secondTold) {
		t.Errorf("failed %d + dropped %d < the %d narratives told after the collector died", o.Failed, o.Dropped, secondTold)
	}
	if o.Exported < uint64(countIn(received, firstNS)) {
		t.Errorf("exported %d, but the collector had %d of the first scenario's", o.Exported, countIn(received, firstNS))
	}
	if o.MetricExportsFailed == 0 || o.LastError == "" {
		t.Errorf("metric exports failed %d, last error %q: want the dead collector seen", o.MetricExportsFailed, o.LastError)
	}
	if n := strings.Count(stderr.String(), "OTLP export to"); n != 1 {
		t.Errorf("%d warnings about failing exports on stderr, want 1:\n%s", n, stderr)
	}
	for _, r := range readLogs(t, c.logs) {
		if ns, _ := r.Attrs["tcpwatch.netns"].(int64); slices.Contains(secondNS, uint32(ns)) {
			if ts, _ := strconv.ParseInt(r.TimeUnixNano, 10, 64); after(ts) {
				t.Errorf("the dead collector has a record of the second scenario: %s %v", r.Body, r.Attrs["tcpwatch.verdict"])
			}
		}
	}
}

// An incident (a peer gone silent under several connections) reaches the
// collector as incident log records, the peer in the conventions' names,
// and its connections' folded narratives carry its id.
func TestOTLPIncident(t *testing.T) {
	testkit.RequirePrivileged(t)
	const conns = 8
	col := startCollector(t)
	c, servers := outageLab(t, 1)
	s := servers[0]
	netns := hosts.Netns(t, c)
	if err := c.Sysctl("net/ipv4/tcp_retries2", "3"); err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, "--netns", fmt.Sprint(netns), "-o", "json", "--otlp", "http://"+col.http, "--host-name", "node-otlp")
	waitRunning(t, w.cmd.Process.Pid)
	startPeerServer(t, s, s.Addr4())
	dialed := dialMany(t, c, netip.AddrPortFrom(s.Addr4(), outagePort), conns, -1)
	if _, err := c.Blackhole(s.Addr4()); err != nil {
		t.Fatal(err)
	}
	for _, cn := range dialed {
		cn.Write(make([]byte, 100))
	}
	// tcp_retries2=3: the kernel gives up after about 3 s; the incident
	// closes 5 s after the last connection's trouble.
	time.Sleep(15 * time.Second)
	run := parseJSONRun(t, w.stop(t))
	col.stop(t)
	if len(run.incidents) == 0 {
		t.Fatalf("no incident told")
	}
	o := run.stats.OTLP
	if o == nil || o.Exported != o.Emitted || o.Failed+o.Dropped != 0 {
		t.Fatalf("otlp %+v: want everything exported", o)
	}
	var incs, folded int
	ids := map[string]bool{}
	for _, inc := range run.incidents {
		ids[inc.IncidentID] = true
	}
	for _, r := range readLogs(t, col.logs) {
		switch r.EventName {
		case "tcpwatch.incident":
			incs++
			id, _ := r.Attrs["tcpwatch.incident_id"].(string)
			if !ids[id] || r.Attrs["network.peer.address"] != s.Addr4().String() || r.Attrs["network.peer.port"] != int64(outagePort) ||
				r.Body == "" || r.Attrs["tcpwatch.phase"] == nil {
				t.Errorf("incident record: id %q body %q attrs %v", id, r.Body, r.Attrs)
			}
			if r.Attrs["tcpwatch.phase"] == "close" && (r.Attrs["tcpwatch.outcome"] != "fatal" || r.SeverityText != "ERROR") {
				t.Errorf("closing record: outcome %v severity %s, want fatal ERROR", r.Attrs["tcpwatch.outcome"], r.SeverityText)
			}
		case "tcpwatch.narrative":
			if id, _ := r.Attrs["tcpwatch.incident_id"].(string); ids[id] {
				folded++
				if r.Attrs["network.community_id"] == nil || r.Attrs["network.peer.address"] != s.Addr4().String() {
					t.Errorf("narrative in the incident: attrs %v", r.Attrs)
				}
			}
		}
	}
	t.Logf("%d incident records and %d narratives in incidents told; the collector has %d and %d", len(run.incidents),
		countInIncident(run.narratives, ids), incs, folded)
	if incs != len(run.incidents) || folded != countInIncident(run.narratives, ids) || folded == 0 {
		t.Errorf("collector: %d incident records, %d narratives in incidents; tcpwatch told %d and %d",
			incs, folded, len(run.incidents), countInIncident(run.narratives, ids))
	}
}

func countInIncident(ns []narrativeJSON, ids map[string]bool) int {
	n := 0
	for _, x := range ns {
		if ids[x.IncidentID] {
			n++
		}
	}
	return n
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func writeSelfSigned(t *testing.T, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tcpwatch test collector"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestOTLPOverTLS: an https URL is TLS, trusting what
// OTEL_EXPORTER_OTLP_CERTIFICATE names, over both protocols; without it
// the collector's certificate is refused and every record counted failed.
func TestOTLPOverTLS(t *testing.T) {
	testkit.RequirePrivileged(t)
	for _, tc := range []struct {
		name, proto string
		trust       bool
	}{{"http-trusted", "http/protobuf", true}, {"grpc-trusted", "grpc", true}, {"http-untrusted", "http/protobuf", false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCollectorTLS(t, true)
			addr := c.http
			if tc.proto == "grpc" {
				addr = c.grpc
			}
			env := []string{"OTEL_EXPORTER_OTLP_PROTOCOL=" + tc.proto}
			if tc.trust {
				env = append(env, "OTEL_EXPORTER_OTLP_CERTIFICATE="+c.cert)
			}
			cmd, stdout, stderr := watchOTLP(t, "https://"+addr, env)
			defer func() {
				if t.Failed() {
					t.Logf("tcpwatch stdout:\n%s\nstderr:\n%s\ncollector:\n%s", stdout, stderr, c.stderr.String())
				}
			}()
			res, err := lab.Run(context.Background(), "connect-refused", lab.Options{}, func(lab.Record) {})
			if err != nil {
				cmd.Process.Kill()
				t.Fatalf("lab: %v", err)
			}
			time.Sleep(300 * time.Millisecond)
			told, stats := stopWatch(t, cmd, stdout, stderr, netnsOf(res))
			c.stop(t)
			o := stats.OTLP
			got := readLogs(t, c.logs)
			t.Logf("%s: %d lab narratives told; otlp %+v; the collector has %d records", tc.name, len(told), *o, len(got))
			if len(told) == 0 {
				t.Fatalf("no lab narrative told")
			}
			if tc.trust {
				if o.Exported != o.Emitted || o.Failed+o.Dropped != 0 || uint64(len(got)) != o.Exported {
					t.Errorf("trusted TLS: otlp %+v, collector %d records: want all exported and received", *o, len(got))
				}
				return
			}
			if o.Exported != 0 || o.Failed+o.Dropped != o.Emitted || len(got) != 0 || !strings.Contains(o.LastError, "certificate") {
				t.Errorf("untrusted TLS: otlp %+v, collector %d records: want nothing exported, all failed on the certificate", *o, len(got))
			}
		})
	}
}

// tcpwatch itself in a pod's container: the resource of its records names
// that container and pod (from its own cgroup), and takes what
// OTEL_RESOURCE_ATTRIBUTES adds.
func TestOTLPResourceInAContainer(t *testing.T) {
	testkit.RequirePrivileged(t)
	c := startCollector(t)
	mount, parent := cgroups.Parent(t)
	id := fleetID(7)
	cg := cgroups.Make(t, mount, parent, "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"+fleetUIDU+".slice/cri-containerd-"+id+".scope")
	cmd := tcpwatch(t, "-o", "json", "--otlp", "http://"+c.http, "--host-name", "node-c")
	cmd.Env = append(cmd.Env, "OTEL_BLRP_SCHEDULE_DELAY=100", "OTEL_RESOURCE_ATTRIBUTES=k8s.node.name=node-c,k8s.pod.name=tcpwatch-x7")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cgroups.Start(t, cg, cmd)
	waitRunning(t, cmd.Process.Pid)
	// A refused connection, for a record to carry the resource.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		conn.Close()
		t.Fatal("connect to a closed port succeeded")
	}
	time.Sleep(300 * time.Millisecond)
	_, stats := stopWatch(t, cmd, &stdout, &stderr, nil)
	c.stop(t)
	recs := readLogs(t, c.logs)
	if len(recs) == 0 || stats.OTLP.Exported == 0 {
		t.Fatalf("the collector has %d records (otlp %+v)", len(recs), *stats.OTLP)
	}
	want := map[string]any{"container.id": id, "k8s.pod.uid": fleetUID, "k8s.node.name": "node-c",
		"k8s.pod.name": "tcpwatch-x7", "host.name": "node-c", "service.name": "tcpwatch"}
	for k, v := range want {
		if recs[0].Resource[k] != v {
			t.Errorf("resource %s = %v, want %v (resource %v)", k, recs[0].Resource[k], v, recs[0].Resource)
		}
	}
}

// A collector that accepts connections and never answers: tcpwatch tells
// everything on stdout as if it were not there, holds at most its small
// queue, counts every record it could not send, and still stops at
// SIGINT (the shutdown is bounded; the export in flight is cut).
func TestOTLPCollectorNeverAnswers(t *testing.T) {
	testkit.RequirePrivileged(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, conn) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	cmd, stdout, stderr := watchOTLP(t, "http://"+ln.Addr().String(), []string{
		"OTEL_BLRP_MAX_QUEUE_SIZE=2", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE=1",
		"OTEL_BLRP_EXPORT_TIMEOUT=600000", "OTEL_EXPORTER_OTLP_TIMEOUT=600000", "OTEL_METRIC_EXPORT_TIMEOUT=600000"})
	var netns []uint32
	for _, sc := range []string{"process-crash", "connect-refused"} {
		res, err := lab.Run(context.Background(), sc, lab.Options{}, func(lab.Record) {})
		if err != nil {
			cmd.Process.Kill()
			t.Fatalf("lab %s: %v", sc, err)
		}
		netns = append(netns, netnsOf(res)...)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	told, stats := stopWatch(t, cmd, stdout, stderr, netns)
	stopped := time.Since(start)
	o := stats.OTLP
	t.Logf("%d lab narratives told; stopped %v after SIGINT; otlp %+v", len(told), stopped.Round(time.Millisecond), *o)
	var verdicts []string
	for _, n := range told {
		verdicts = append(verdicts, n.Verdict)
	}
	for _, v := range []string{"peer_closed", "local_process_exited", "connect_refused"} {
		if !slices.Contains(verdicts, v) {
			t.Errorf("no %s told on stdout (%v): the collector held tcpwatch up", v, verdicts)
		}
	}
	if o.Exported != 0 || o.Emitted != o.Failed+o.Dropped || o.Failed == 0 || o.Dropped+o.Failed < uint64(len(told)) {
		t.Errorf("otlp %+v: want nothing exported, every record failed (the export cut at exit) or dropped", *o)
	}
	// Bounded: 5 s for the queue at exit, whatever the collector does.
	if stopped > 30*time.Second {
		t.Errorf("tcpwatch took %v to stop with the collector not answering", stopped)
	}
}
