package main

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/output/otlp"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
)

// pipelineOptions are the flags for handing tcpwatch's records to the
// pipelines people already run: the flow id other tools share, the
// semantic conventions' names, and OTLP.
type pipelineOptions struct {
	communityIDSeed uint16
	schemaText      string
	schema          output.Schema
	otlpURL         string
}

func (p *pipelineOptions) addFlags(fs *pflag.FlagSet) {
	fs.Uint16Var(&p.communityIDSeed, "community-id-seed", 0, "seed of the community_id flow hash (0, the standard default, unless the tools you join with use another)")
	fs.StringVar(&p.schemaText, "schema", "v1", "JSON field names: v1 (tcpwatch's own) or v2 (OpenTelemetry semantic conventions, as --otlp sends; docs/pipelines.md)")
	fs.StringVar(&p.otlpURL, "otlp", "", "also send narratives as OTLP logs and the metrics as OTLP metrics to this collector (e.g. http://localhost:4318; OTEL_EXPORTER_OTLP_* variables apply)")
}

func (p *pipelineOptions) check(fs *pflag.FlagSet) error {
	s, err := output.ParseSchema(p.schemaText)
	if err != nil {
		return err
	}
	p.schema = s
	if fs.Changed("otlp") {
		if err := otlp.CheckURL(p.otlpURL); err != nil {
			return err
		}
		if _, err := otlp.Protocol("logs"); err != nil {
			return err
		}
		if _, err := otlp.Protocol("metrics"); err != nil {
			return err
		}
	}
	return nil
}

// otlpShutdownWithin bounds how long tcpwatch waits at exit for the
// collector to take what is still queued.
const otlpShutdownWithin = 5 * time.Second

// startOTLP builds the exporter when --otlp is given (nil otherwise); its
// counts join the metrics (which then exist even without --metrics).
func (p *pipelineOptions) startOTLP(fl *fleet, cfg *engine.Config, explain bool) (*otlp.Exporter, error) {
	if p.otlpURL == "" {
		return nil, nil
	}
	fl.ensureMetrics(cfg)
	e, err := otlp.New(context.Background(), otlp.Config{URL: p.otlpURL, Host: fl.host, Version: buildVersion(),
		CommunityIDSeed: p.communityIDSeed, Explain: explain, Gatherer: fl.metrics.Registry, Warn: cfg.Warn})
	if err != nil {
		return nil, err
	}
	if err := e.Register(fl.metrics.Registry); err != nil {
		return nil, fmt.Errorf("--otlp: %w", err)
	}
	return e, nil
}

// stopOTLP sends what is left and says what could not be sent. The last
// exports' failures are not errors of their own: they are counted, with
// the last error, in the stats it returns.
func stopOTLP(e *otlp.Exporter) *output.OTLPStats {
	if e == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), otlpShutdownWithin)
	defer cancel()
	e.Shutdown(ctx)
	s := e.Stats()
	return &output.OTLPStats{Emitted: s.Emitted, Exported: s.Exported, Failed: s.Failed, Dropped: s.Dropped,
		MetricExports: s.MetricExports, MetricExportsFailed: s.MetricExportsFailed, LastError: s.LastError}
}

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
