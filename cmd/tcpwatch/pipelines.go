package main

import (
	"github.com/spf13/pflag"

	"github.com/tcpwatch/tcpwatch/output"
)

// pipelineOptions are the flags for handing tcpwatch's records to the
// pipelines people already run: the flow id other tools share.
type pipelineOptions struct {
	communityIDSeed uint16
	schemaText      string
	schema          output.Schema
}

func (p *pipelineOptions) addFlags(fs *pflag.FlagSet) {
	fs.Uint16Var(&p.communityIDSeed, "community-id-seed", 0, "seed of the community_id flow hash (0, the standard default, unless the tools you join with use another)")
	fs.StringVar(&p.schemaText, "schema", "v1", "JSON field names: v1 (tcpwatch's own) or v2 (OpenTelemetry semantic conventions, as --otlp sends; docs/pipelines.md)")
}

func (p *pipelineOptions) check(fs *pflag.FlagSet) error {
	s, err := output.ParseSchema(p.schemaText)
	if err != nil {
		return err
	}
	p.schema = s
	return nil
}
