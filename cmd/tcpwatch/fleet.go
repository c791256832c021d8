package main

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/pflag"

	"github.com/tcpwatch/tcpwatch/output/metrics"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
)

// fleetOptions are the flags for running tcpwatch on many machines:
// naming the host and the container, filtering by them, and metrics.
type fleetOptions struct {
	hostName      string
	container     string
	cgroup        string
	metricsAddr   string
	metricsLabels []string
}

func (f *fleetOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.hostName, "host-name", "", "the host field of every JSON record (default: the hostname)")
	fs.StringVar(&f.container, "container", "", "only connections of the container whose id starts with this (hex, as docker ps shows it)")
	fs.StringVar(&f.cgroup, "cgroup", "", "only connections whose cgroup v2 path starts with this (e.g. /kubepods.slice)")
	fs.StringVar(&f.metricsAddr, "metrics", "", "serve Prometheus metrics on this address at /metrics (e.g. :9599)")
	fs.StringSliceVar(&f.metricsLabels, "metrics-labels", nil, "optional metric labels: container")
}

var hexPrefix = regexp.MustCompile(`^[0-9a-f]{1,64}$`)

func (f *fleetOptions) check(fs *pflag.FlagSet) error {
	if fs.Changed("container") && !hexPrefix.MatchString(f.container) {
		return fmt.Errorf("--container %q is not a container id or its prefix (lowercase hex, up to 64 digits)", f.container)
	}
	if fs.Changed("cgroup") && !strings.HasPrefix(f.cgroup, "/") {
		return fmt.Errorf("--cgroup %q is not a cgroup path (it starts with /, as in /proc/PID/cgroup)", f.cgroup)
	}
	if fs.Changed("host-name") && strings.TrimSpace(f.hostName) == "" {
		return errors.New("--host-name must not be empty")
	}
	for _, l := range f.metricsLabels {
		if l != "container" {
			return fmt.Errorf("--metrics-labels %q: the only optional label is container (addresses and ports never become labels)", l)
		}
	}
	if len(f.metricsLabels) > 0 && f.metricsAddr == "" {
		return errors.New("--metrics-labels needs --metrics")
	}
	return nil
}

// fleet is what setup made: the host name, the metrics and their server.
type fleet struct {
	host    string
	metrics *metrics.Metrics
	server  *metrics.Server
}

// setup resolves the host name and the cgroup hierarchy, and starts the
// metrics server, before the kernel half is loaded: a busy port fails the
// start, not the first scrape.
func (f *fleetOptions) setup(opts *engine.Config) (*fleet, error) {
	fl := &fleet{host: f.hostName}
	if fl.host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("hostname: %w (name it with --host-name)", err)
		}
		fl.host = h
	}
	opts.Filter.Container, opts.Filter.Cgroup = f.container, f.cgroup
	if f.cgroup != "/" {
		opts.Filter.Cgroup = strings.TrimSuffix(f.cgroup, "/")
	}
	if mnt, err := containers.FindMount(); err == nil {
		opts.Cgroups = containers.NewResolver(mnt)
	} else if f.container != "" || f.cgroup != "" {
		return nil, fmt.Errorf("--container/--cgroup: %w", err)
	}
	if f.metricsAddr != "" {
		fl.metrics = metrics.New(metrics.Options{Container: len(f.metricsLabels) > 0})
		srv, err := fl.metrics.Serve(f.metricsAddr)
		if err != nil {
			return nil, err
		}
		fl.server = srv
		opts.Observe = fl.metrics.Observe
	}
	return fl, nil
}

// stages are what stands between the engine and the output: the metrics,
// when they are on, count what goes to the output.
func (fl *fleet) stages() []engine.Stage {
	if fl.metrics == nil {
		return nil
	}
	return []engine.Stage{fl.metrics.Stage}
}

// ensureMetrics makes the metrics exist (for OTLP) without serving them.
func (fl *fleet) ensureMetrics(cfg *engine.Config) {
	if fl.metrics == nil {
		fl.metrics = metrics.New(metrics.Options{})
		cfg.Observe = fl.metrics.Observe
	}
}

// observeIncident hands an incident record to the metrics, when they are on.
func (fl *fleet) observeIncident(inc *incident.Incident) {
	if fl.metrics != nil {
		fl.metrics.Incident(inc)
	}
}

// incidentInTrouble follows an open incident's count, when metrics are on.
func (fl *fleet) incidentInTrouble() func(id string, n int) {
	if fl.metrics == nil {
		return nil
	}
	return fl.metrics.IncidentInTrouble
}

func (fl *fleet) close() {
	if fl.server != nil {
		fl.server.Close()
	}
}
