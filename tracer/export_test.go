package tracer

import (
	"fmt"

	"github.com/tcpwatch/tcpwatch/bpf"
)

// WithMapEntries makes cfg load the named maps with these max_entries.
func WithMapEntries(cfg Config, entries map[string]uint32) Config {
	cfg.mapEntries = entries
	return cfg
}

// MapEntries counts the entries of one of the kernel half's maps.
func (t *Tracer) MapEntries(name string) (int, error) {
	m, ok := t.coll.Maps[name]
	if !ok {
		return 0, fmt.Errorf("no map %s", name)
	}
	var key, value []byte
	n := 0
	it := m.Iterate()
	for it.Next(&key, &value) {
		n++
	}
	return n, it.Err()
}

// TroubleGate reads the gate's counts of troubled and ka_probes entries.
func (t *Tracer) TroubleGate() (bpf.TcpwatchTroubleGate, error) {
	var g bpf.TcpwatchTroubleGate
	err := t.coll.Maps[bpf.TcpwatchMapTroubleGate].Lookup(uint32(0), &g)
	return g, err
}
