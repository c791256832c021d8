// Package otlp sends what tcpwatch tells to an OpenTelemetry collector
// with the official Go SDK: every narrative, incident record, notice, loss
// report (and, with --events, kernel event) as an OTLP log record, in the v2 schema's names
// (output.Attrs), and the Prometheus metrics' figures as OTLP metrics.
//
// Where the collector is and how to reach it is the SDK's standard
// configuration: the --otlp URL, then OTEL_EXPORTER_OTLP_PROTOCOL (grpc or
// http/protobuf), _HEADERS, _CERTIFICATE, _CLIENT_*, _TIMEOUT,
// _COMPRESSION (and their _LOGS_/_METRICS_ forms), OTEL_BLRP_* for the
// log queue and OTEL_METRIC_EXPORT_INTERVAL/_TIMEOUT for metrics.
//
// A slow or dead collector never holds up the pipeline: records wait in a
// bounded queue and are dropped, and counted, when it is full; every
// record that could not be sent is in Stats, in the `stats` record and in
// tcpwatch_otlp_* metrics.
package otlp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	promBridge "go.opentelemetry.io/contrib/bridges/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Config says where to send and what to name.
type Config struct {
	// URL is the collector: scheme http (plain) or https (TLS), host,
	// port and, for http/protobuf, an optional path prefix under which
	// /v1/logs and /v1/metrics are posted.
	URL string
	// Host is the resource's host.name (--host-name or the hostname).
	Host string
	// Version is the resource's service.version.
	Version string
	// CommunityIDSeed seeds network.community_id.
	CommunityIDSeed uint16
	// Explain sends a normal lifecycle's explanation, timeline and
	// settings too (--explain), as its JSON line has them.
	Explain bool
	// Gatherer holds the metrics to send (tcpwatch's Prometheus registry);
	// nil sends no metrics.
	Gatherer prometheus.Gatherer
	// Warn is told when exports begin to fail (once until one succeeds).
	Warn func(error)
}

// Exporter sends tcpwatch's records and metrics to a collector.
type Exporter struct {
	cfg       Config
	logs      *sdklog.LoggerProvider
	logger    log.Logger
	queue     *queue
	meters    *sdkmetric.MeterProvider
	metricExp *countingMetricExporter
	failing   atomic.Bool
	kvs       []attribute.KeyValue // emit's buffer
}

// Stats count what became of the records handed to the exporter.
type Stats struct {
	// Emitted log records; Exported the collector accepted; Failed were
	// sent but refused or not answered in time (retries included);
	// Dropped never left: the queue was full, or still held them at exit.
	Emitted, Exported, Failed, Dropped uint64
	// MetricExports and MetricExportsFailed count metric exports.
	MetricExports, MetricExportsFailed uint64
	// LastError is the latest export error, "" if none.
	LastError string
}

// Protocol is what OTEL_EXPORTER_OTLP_[LOGS_|METRICS_]PROTOCOL says for a
// signal ("logs" or "metrics"), http/protobuf when nothing does (the
// specification's default).
func Protocol(signal string) (string, error) {
	name := "OTEL_EXPORTER_OTLP_" + strings.ToUpper(signal) + "_PROTOCOL"
	p := os.Getenv(name)
	if p == "" {
		name = "OTEL_EXPORTER_OTLP_PROTOCOL"
		p = os.Getenv(name)
	}
	switch p {
	case "", "http/protobuf":
		return "http/protobuf", nil
	case "grpc":
		return "grpc", nil
	}
	return "", fmt.Errorf("%s=%q: tcpwatch speaks grpc and http/protobuf", name, p)
}

// CheckURL says whether u can be a collector's URL.
func CheckURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.RawQuery != "" || p.Fragment != "" {
		return fmt.Errorf("--otlp %q is not a collector URL (http://host:port or https://host:port, e.g. http://localhost:4318)", u)
	}
	return nil
}

// signalURL is the URL for one signal: for http/protobuf the path prefix
// and /v1/<signal>, as OTEL_EXPORTER_OTLP_ENDPOINT is read; gRPC takes
// scheme and host only.
func signalURL(base, proto, signal string) string {
	u, _ := url.Parse(base)
	if proto == "grpc" {
		u.Path = ""
		return u.String()
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/" + signal
	return u.String()
}

// envInt reads a positive integer setting, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// envMillis reads a positive duration in milliseconds, or def.
func envMillis(name string, def time.Duration) time.Duration {
	return time.Duration(envInt(name, int(def/time.Millisecond))) * time.Millisecond
}

// New builds the exporters (they connect lazily: a collector that is not
// up yet only makes the first exports fail, counted).
func New(ctx context.Context, cfg Config) (*Exporter, error) {
	if err := CheckURL(cfg.URL); err != nil {
		return nil, err
	}
	logProto, err := Protocol("logs")
	if err != nil {
		return nil, err
	}
	metricProto, err := Protocol("metrics")
	if err != nil {
		return nil, err
	}
	// The SDK's own complaints (a refused connection, a retry) are
	// counted and warned about here instead of printed by its logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var logExp sdklog.Exporter
	if logProto == "grpc" {
		logExp, err = otlploggrpc.New(ctx, otlploggrpc.WithEndpointURL(signalURL(cfg.URL, logProto, "logs")))
	} else {
		logExp, err = otlploghttp.New(ctx, otlploghttp.WithEndpointURL(signalURL(cfg.URL, logProto, "logs")))
	}
	if err != nil {
		return nil, fmt.Errorf("--otlp: %w", err)
	}
	e := &Exporter{cfg: cfg}
	e.queue = newQueue(warnExporter{logExp, e},
		envInt("OTEL_BLRP_MAX_QUEUE_SIZE", 2048), envInt("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", 512),
		envMillis("OTEL_BLRP_SCHEDULE_DELAY", time.Second), envMillis("OTEL_BLRP_EXPORT_TIMEOUT", 30*time.Second))
	if e.queue.batch > e.queue.max {
		e.queue.batch = e.queue.max
	}
	// Attribute keys are unique by construction (output.Attrs): the
	// SDK's de-duplication, a map per record, was most of the cost.
	e.logs = sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(e.queue), sdklog.WithAllowKeyDuplication())
	e.logger = e.logs.Logger("github.com/tcpwatch/tcpwatch", log.WithInstrumentationVersion(cfg.Version))
	if cfg.Gatherer != nil {
		var mexp sdkmetric.Exporter
		if metricProto == "grpc" {
			mexp, err = otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpointURL(signalURL(cfg.URL, metricProto, "metrics")))
		} else {
			mexp, err = otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(signalURL(cfg.URL, metricProto, "metrics")))
		}
		if err != nil {
			e.logs.Shutdown(ctx)
			return nil, fmt.Errorf("--otlp: %w", err)
		}
		e.metricExp = &countingMetricExporter{Exporter: mexp, e: e}
		// The bridge reads the same registry /metrics serves, so OTLP and
		// Prometheus tell the same figures under the same names.
		reader := sdkmetric.NewPeriodicReader(e.metricExp,
			sdkmetric.WithProducer(promBridge.NewMetricProducer(promBridge.WithGatherer(tcpwatchOnly{cfg.Gatherer}))))
		e.meters = sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(reader))
	}
	return e, nil
}

// newResource says who is talking: service tcpwatch on this host, in the
// container and pod tcpwatch itself runs in when it runs in one, plus
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{
		attribute.String("service.name", "tcpwatch"),
		attribute.String("host.name", cfg.Host),
	}
	if cfg.Version != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.Version))
	}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		// cgroup v2: one line, "0::/path".
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if path, ok := strings.CutPrefix(line, "0::"); ok {
				info := containers.Parse(path)
				if info.ID != "" {
					attrs = append(attrs, attribute.String("container.id", info.ID))
				}
				if info.PodUID != "" {
					attrs = append(attrs, attribute.String("k8s.pod.uid", info.PodUID))
				}
			}
		}
	}
	// The environment is merged last so that an operator's
	// OTEL_RESOURCE_ATTRIBUTES (k8s.node.name, k8s.pod.name, …) wins.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil && res == nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return res, nil
}

// tcpwatchOnly keeps tcpwatch's own metric families: the Go runtime's and
// the process's, which /metrics also serves, have OTel's own conventions
// and a collector's host metrics for that.
type tcpwatchOnly struct{ g prometheus.Gatherer }

func (t tcpwatchOnly) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := t.g.Gather()
	out := mfs[:0]
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "tcpwatch_") {
			out = append(out, mf)
		}
	}
	return out, err
}

// warnExporter tells Config.Warn when exports start failing, once until
// one succeeds again.
type warnExporter struct {
	sdklog.Exporter
	e *Exporter
}

func (w warnExporter) Export(ctx context.Context, rs []sdklog.Record) error {
	err := w.Exporter.Export(ctx, rs)
	w.e.noteExport(err)
	return err
}

func (e *Exporter) noteExport(err error) {
	if err == nil {
		e.failing.Store(false)
		return
	}
	if !e.failing.Swap(true) && e.cfg.Warn != nil {
		e.cfg.Warn(fmt.Errorf("OTLP export to %s failing (records not sent are counted in stats and tcpwatch_otlp_*): %w", e.cfg.URL, err))
	}
}

type countingMetricExporter struct {
	sdkmetric.Exporter
	e              *Exporter
	exports, fails atomic.Uint64
}

func (c *countingMetricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	err := c.Exporter.Export(ctx, rm)
	c.exports.Add(1)
	if err != nil {
		c.fails.Add(1)
		c.e.queue.lastErr.Store(err.Error())
	}
	c.e.noteExport(err)
	return err
}

// Stats are the counts so far.
func (e *Exporter) Stats() Stats {
	s := Stats{Emitted: e.queue.emitted.Load(), Exported: e.queue.exported.Load(),
		Failed: e.queue.failed.Load(), Dropped: e.queue.dropped.Load()}
	if e.metricExp != nil {
		s.MetricExports, s.MetricExportsFailed = e.metricExp.exports.Load(), e.metricExp.fails.Load()
	}
	s.LastError, _ = e.queue.lastErr.Load().(string)
	return s
}

// Register adds the exporter's counts to a Prometheus registry (and so,
// through the bridge, to the OTLP metrics): tcpwatch_otlp_log_records_total
// by outcome, and tcpwatch_otlp_metric_exports_total by outcome.
func (e *Exporter) Register(reg prometheus.Registerer) error {
	counter := func(name, help, outcome string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help,
			ConstLabels: prometheus.Labels{"outcome": outcome}}, func() float64 { return float64(f()) })
	}
	logHelp := "OTLP log records by outcome: exported (accepted by the collector), failed (refused or unanswered, retries included), dropped (never sent: the queue was full)."
	metricHelp := "OTLP metric exports by outcome."
	var errs []error
	for _, c := range []prometheus.Collector{
		counter("tcpwatch_otlp_log_records_total", logHelp, "exported", e.queue.exported.Load),
		counter("tcpwatch_otlp_log_records_total", logHelp, "failed", e.queue.failed.Load),
		counter("tcpwatch_otlp_log_records_total", logHelp, "dropped", e.queue.dropped.Load),
	} {
		errs = append(errs, reg.Register(c))
	}
	if e.metricExp != nil {
		m := e.metricExp
		errs = append(errs,
			reg.Register(counter("tcpwatch_otlp_metric_exports_total", metricHelp, "exported", func() uint64 { return m.exports.Load() - m.fails.Load() })),
			reg.Register(counter("tcpwatch_otlp_metric_exports_total", metricHelp, "failed", m.fails.Load)))
	}
	return errors.Join(errs...)
}

// Shutdown sends what is held and a last collection of the metrics, for
// as long as ctx allows; what could not be sent by then is counted.
func (e *Exporter) Shutdown(ctx context.Context) error {
	// Metrics and logs at once: a collector that does not answer would
	// otherwise spend the whole time on the metrics' last export, and the
	// log queue would never be shut down and counted.
	metricsDone := make(chan error, 1)
	go func() {
		if e.meters == nil {
			metricsDone <- nil
			return
		}
		metricsDone <- e.meters.Shutdown(ctx)
	}()
	// The queue first, directly: the provider skips its processors when
	// ctx has already ended, and every record must be counted.
	errs := []error{e.queue.Shutdown(ctx), e.logs.Shutdown(ctx)}
	errs = append(errs, <-metricsDone)
	return errors.Join(errs...)
}

// severity maps tcpwatch's grades to OTLP's.
func severity(s output.Severity) log.Severity { return log.Severity(s.Number) }

// emit sends one record: time, severity, body and the v2 attributes
// (host.name is the resource's, not repeated on every record).
func (e *Exporter) emit(event string, t time.Time, sev output.Severity, body string, attrs []output.Attr) {
	var r log.Record
	r.SetEventName(event)
	r.SetTimestamp(t)
	r.SetObservedTimestamp(time.Now())
	r.SetSeverity(severity(sev))
	r.SetSeverityText(sev.Text)
	r.SetBody(attribute.StringValue(body))
	// The record copies the attributes: one buffer serves every record
	// (emit runs on the engine's goroutine only).
	kvs := e.kvs[:0]
	for _, a := range attrs {
		if a.Key == "host.name" {
			continue
		}
		kvs = append(kvs, keyValue(a))
	}
	r.AddAttributes(kvs...)
	e.logger.Emit(context.Background(), r)
	clear(kvs) // let go of the strings
	e.kvs = kvs
}

func keyValue(a output.Attr) attribute.KeyValue {
	switch v := a.Value.(type) {
	case string:
		return attribute.String(a.Key, v)
	case int64:
		return attribute.Int64(a.Key, v)
	case bool:
		return attribute.Bool(a.Key, v)
	case []int64:
		return attribute.Int64Slice(a.Key, v)
	case []output.TimelineStep:
		steps := make([]attribute.Value, len(v))
		for i, s := range v {
			steps[i] = attribute.MapValue(attribute.Int64("t_ms", s.TMs), attribute.String("event", s.Event))
		}
		return attribute.Slice(a.Key, steps...)
	}
	// Nested records (an incident's owners, its joined connections):
	// their JSON form, as OTLP lists and maps.
	j, err := json.Marshal(a.Value)
	if err != nil {
		return attribute.String(a.Key, fmt.Sprint(a.Value))
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return attribute.String(a.Key, string(j))
	}
	return attribute.KeyValue{Key: attribute.Key(a.Key), Value: anyValue(v)}
}

// anyValue converts decoded JSON to an attribute value.
func anyValue(v any) attribute.Value {
	switch v := v.(type) {
	case string:
		return attribute.StringValue(v)
	case bool:
		return attribute.BoolValue(v)
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return attribute.Int64Value(i)
		}
		f, _ := v.Float64()
		return attribute.Float64Value(f)
	case []any:
		vs := make([]attribute.Value, len(v))
		for i, x := range v {
			vs[i] = anyValue(x)
		}
		return attribute.SliceValue(vs...)
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		kvs := make([]attribute.KeyValue, len(keys))
		for i, k := range keys {
			kvs[i] = attribute.KeyValue{Key: attribute.Key(k), Value: anyValue(v[k])}
		}
		return attribute.MapValue(kvs...)
	}
	return attribute.StringValue("")
}

// Narrative sends one narrative, whose connection's cgroup names cg.
func (e *Exporter) Narrative(n *tracker.Narrative, cg containers.Info) {
	rec := output.NewNarrativeRecordSeeded(n, cg, e.cfg.CommunityIDSeed)
	e.emit("tcpwatch.narrative", n.Time, output.VerdictSeverity(n.Verdict), rec.Summary, output.NarrativeAttrs(&rec, n, e.cfg.Explain))
}

// Incident sends one incident record (open, update, close).
func (e *Exporter) Incident(inc *incident.Incident) {
	rec := output.NewIncidentRecord(inc)
	t := inc.Time
	if t.IsZero() {
		t = time.Now()
	}
	e.emit("tcpwatch.incident", t, output.IncidentSeverity(inc), rec.Summary, output.Attrs(&rec))
}

// Notice sends one notice.
func (e *Exporter) Notice(n *tracker.Notice, cg containers.Info) {
	rec := output.NewNoticeRecordSeeded(n, cg, e.cfg.CommunityIDSeed)
	e.emit("tcpwatch.notice", n.Time, output.SeverityInfo, rec.Summary, output.Attrs(&rec))
}

// Event sends one raw kernel event (--events).
func (e *Exporter) Event(ev *wire.Event, reasons tcp.ResetReasons, cg containers.Info) {
	rec := output.NewEventRecordSeeded(ev, reasons, cg, e.cfg.CommunityIDSeed)
	e.emit("tcpwatch.event", ev.Time, output.SeverityDebug, output.EventText(ev, reasons), output.Attrs(&rec))
}

// Loss sends a loss report: the kernel could not deliver records, so
// stories told from now on may have gaps.
func (e *Exporter) Loss(l engine.Loss) {
	body := fmt.Sprintf("%d kernel records lost (%d in all: %d ring buffer full, %d programs skipped by recursion), %d kernel skips for want of room (in all: %d sockets without storage, %d connections in trouble not marked, %d keepalive probes not remembered, %d SYN-ACK retransmissions not counted): stories told from now on may have gaps",
		l.New, l.Total, l.RingFull, l.Recursion, l.NewSkipped, l.Skipped.NoStorage, l.Skipped.TroubledFull, l.Skipped.KeepaliveFull, l.Skipped.SynackFull)
	e.emit("tcpwatch.loss", time.Now(), output.SeverityWarn, body, []output.Attr{
		{Key: "tcpwatch.new", Value: int64(l.New)}, {Key: "tcpwatch.total", Value: int64(l.Total)},
		{Key: "tcpwatch.ring_full", Value: int64(l.RingFull)}, {Key: "tcpwatch.recursion", Value: int64(l.Recursion)},
		{Key: "tcpwatch.new_skipped", Value: int64(l.NewSkipped)},
		{Key: "tcpwatch.skipped.no_storage", Value: int64(l.Skipped.NoStorage)},
		{Key: "tcpwatch.skipped.troubled_full", Value: int64(l.Skipped.TroubledFull)},
		{Key: "tcpwatch.skipped.keepalive_full", Value: int64(l.Skipped.KeepaliveFull)},
		{Key: "tcpwatch.skipped.synack_full", Value: int64(l.Skipped.SynackFull)},
	})
}

// Stage sends what goes to next to the collector too, then hands it on
// (an engine.Stage). It never waits for the collector.
func (e *Exporter) Stage(next engine.Sink) engine.Sink { return stage{e, next} }

type stage struct {
	e    *Exporter
	next engine.Sink
}

func (s stage) Tell(it *engine.Item) error {
	switch {
	case it.Narrative != nil:
		s.e.Narrative(it.Narrative, it.Cgroup)
	case it.Notice != nil:
		s.e.Notice(it.Notice, it.Cgroup)
	case it.Event != nil:
		s.e.Event(it.Event, it.ResetReasons, it.Cgroup)
	case it.Incident != nil:
		s.e.Incident(it.Incident)
	case it.Loss != nil:
		s.e.Loss(*it.Loss)
	}
	return s.next.Tell(it)
}

func (s stage) Flush() error { return s.next.Flush() }
