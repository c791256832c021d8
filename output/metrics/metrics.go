// Package metrics exports what tcpwatch tells as Prometheus metrics
// (client_golang), for alerting across a fleet. Labels are deliberately
// few: verdict, address family and, optionally, the container; never
// addresses or ports, whose cardinality has no bound (Prometheus's own
// advice on labels; ebpf_exporter's examples do label addresses, tcpwatch
// does not follow them there).
//
// The metrics count what tcpwatch tells, after the filters (--pid,
// --container, …): a stage in front of the output sees exactly the narratives the output
// writes, so a dashboard and the log agree. The kernel-side counters
// (records read and lost, tracked connections, evictions) are the run's,
// from the engine's once-a-second progress report.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/exposure"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// Options choose the labels.
type Options struct {
	// Container adds a `container` label (the full container id, "" for
	// host processes) to tcpwatch_narratives_total.
	Container bool
}

// Metrics is tcpwatch's registry and its counters.
type Metrics struct {
	Registry   *prometheus.Registry
	container  bool
	narratives *prometheus.CounterVec
	rto        *prometheus.CounterVec
	keepalive  *prometheus.CounterVec
	exposure   *prometheus.GaugeVec
	incidents  incidentMetrics

	events, ringFull, recursion, evictions, endsAtDeadline atomic.Uint64
	// the kernel half's skips for want of room (engine.Stats.Skipped)
	noStorage, troubledFull, keepaliveFull, synackFull atomic.Uint64
	tracked                                            atomic.Int64
}

// New builds the registry.
func New(opts Options) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), container: opts.Container}
	labels := []string{"verdict", "family"}
	if opts.Container {
		labels = append(labels, "container")
	}
	m.narratives = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tcpwatch_narratives_total",
		Help: "Narratives told, by verdict and address family (after the filters).",
	}, labels)
	if !opts.Container {
		// Every registered verdict has its series from the start, at 0:
		// a rate() or an alert on a verdict not yet seen has a series to
		// read. (Containers are not known in advance.)
		for _, v := range words.Verdicts(nil) {
			for _, fam := range []string{"ipv4", "ipv6"} {
				m.narratives.WithLabelValues(string(v), fam)
			}
		}
	}
	m.rto = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tcpwatch_rto_episodes_total",
		Help: "Retransmission-timeout episodes begun: a peer stopped acknowledging (the first stalled narrative of an outage).",
	}, []string{"family"})
	m.keepalive = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tcpwatch_keepalive_episodes_total",
		Help: "Keepalive episodes begun: an idle peer left a keepalive probe unanswered (the first keepalive_probing narrative).",
	}, []string{"family"})
	m.exposure = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcpwatch_connections_by_exposure",
		Help: "Connections by when their kernel would notice a silent peer (class: never, hours, minutes, seconds; the worse of idle and sending), per process name, from the last exposure snapshot.",
	}, []string{"class", "comm"})
	counter := func(name, help string, v *atomic.Uint64, constLabels prometheus.Labels) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: constLabels},
			func() float64 { return float64(v.Load()) })
	}
	lostHelp := "Kernel records tcpwatch could not receive: the ring buffer was full, or a program run was skipped by recursion."
	skipHelp := "What the kernel half could not keep for want of room, and so did not send: a socket's storage (no_storage), a connection in trouble (troubled_full), a keepalive probe (keepalive_full), a listener's SYN-ACK retransmission (synack_full)."
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tcpwatch_build_info",
		Help: "tcpwatch's version and the Go it was built with (always 1).",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version(), runtime.Version()).Set(1)
	m.incidents = newIncidentMetrics()
	m.Registry.MustRegister(
		m.incidents.open, m.incidents.inTrouble, m.incidents.ended,
		m.narratives, m.rto, m.keepalive, m.exposure, build,
		counter("tcpwatch_records_read_total", "Kernel records read from the ring buffer.", &m.events, nil),
		counter("tcpwatch_records_lost_total", lostHelp, &m.ringFull, prometheus.Labels{"reason": "ring_full"}),
		counter("tcpwatch_records_lost_total", lostHelp, &m.recursion, prometheus.Labels{"reason": "recursion"}),
		counter("tcpwatch_kernel_skips_total", skipHelp, &m.noStorage, prometheus.Labels{"reason": "no_storage"}),
		counter("tcpwatch_kernel_skips_total", skipHelp, &m.troubledFull, prometheus.Labels{"reason": "troubled_full"}),
		counter("tcpwatch_kernel_skips_total", skipHelp, &m.keepaliveFull, prometheus.Labels{"reason": "keepalive_full"}),
		counter("tcpwatch_kernel_skips_total", skipHelp, &m.synackFull, prometheus.Labels{"reason": "synack_full"}),
		counter("tcpwatch_tracker_evictions_total", "Connections the tracker forgot to stay under --max-connections.", &m.evictions, nil),
		counter("tcpwatch_ends_at_deadline_total", "Ends told at the kernel's deadline because the kill's records never arrived (narratives marked end_unseen): records missing that no kernel counter saw.", &m.endsAtDeadline, nil),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tcpwatch_tracked_connections",
			Help: "Connections the tracker holds now.",
		}, func() float64 { return float64(m.tracked.Load()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// Observe takes the engine's progress (engine.Config.Observe).
func (m *Metrics) Observe(p engine.Stats) {
	m.events.Store(p.Events)
	m.ringFull.Store(p.RingFull)
	m.recursion.Store(p.Recursion)
	m.noStorage.Store(p.Skipped.NoStorage)
	m.troubledFull.Store(p.Skipped.TroubledFull)
	m.keepaliveFull.Store(p.Skipped.KeepaliveFull)
	m.synackFull.Store(p.Skipped.SynackFull)
	m.evictions.Store(p.Evictions)
	m.endsAtDeadline.Store(p.EndsAtDeadline)
	m.tracked.Store(int64(p.Tracked))
}

// Exposure replaces the exposure gauge with a new snapshot's counts: a
// process gone since the last one leaves the gauge.
func (m *Metrics) Exposure(byComm map[string]exposure.Tally) {
	m.exposure.Reset()
	for comm, t := range byComm {
		for _, c := range exposure.Classes {
			m.exposure.WithLabelValues(c.String(), comm).Set(float64(t[c]))
		}
	}
}

func family(n *tracker.Narrative) string {
	if n.Local.Addr().Is6() {
		return "ipv6"
	}
	return "ipv4"
}

// count counts one narrative told, whose connection's cgroup names cg.
func (m *Metrics) count(n *tracker.Narrative, cg containers.Info) {
	fam := family(n)
	if m.container {
		m.narratives.WithLabelValues(string(n.Verdict), fam, cg.ID).Inc()
	} else {
		m.narratives.WithLabelValues(string(n.Verdict), fam).Inc()
	}
	if !n.Begins {
		return
	}
	switch n.Verdict {
	case tracker.Stalled:
		m.rto.WithLabelValues(fam).Inc()
	case tracker.KeepaliveProbing:
		m.keepalive.WithLabelValues(fam).Inc()
	}
}

// Stage counts the narratives going to next, then hands every item on
// (an engine.Stage).
func (m *Metrics) Stage(next engine.Sink) engine.Sink { return stage{m, next} }

type stage struct {
	m    *Metrics
	next engine.Sink
}

func (s stage) Tell(it *engine.Item) error {
	if it.Narrative != nil {
		s.m.count(it.Narrative, it.Cgroup)
	}
	return s.next.Tell(it)
}

func (s stage) Flush() error { return s.next.Flush() }

// Handler serves the registry in Prometheus's exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// Server serves /metrics on addr.
type Server struct {
	srv *http.Server
	ln  net.Listener
	err chan error
}

// Serve listens on addr at once (so a bad or busy address fails the start,
// not the first scrape) and serves /metrics.
func (m *Metrics) Serve(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "tcpwatch: metrics at /metrics")
	})
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln: ln, err: make(chan error, 1)}
	go func() { s.err <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving.
func (s *Server) Close() error {
	err := s.srv.Close()
	if serr := <-s.err; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
