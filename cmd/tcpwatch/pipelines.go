package main

import (
	"github.com/spf13/pflag"
)

// pipelineOptions are the flags for handing tcpwatch's records to the
// pipelines people already run: the flow id other tools share.
type pipelineOptions struct {
	communityIDSeed uint16
}

func (p *pipelineOptions) addFlags(fs *pflag.FlagSet) {
	fs.Uint16Var(&p.communityIDSeed, "community-id-seed", 0, "seed of the community_id flow hash (0, the standard default, unless the tools you join with use another)")
}
