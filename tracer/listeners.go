package tracer

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tcpwatch/tcpwatch/bpf"
)

// SynackListener is what the kernel half counted of one listener's
// SYN-ACK retransmissions (tcp:tcp_retransmit_synack, bpf/listeners.h):
// counters since tcpwatch first saw one, never reset.
type SynackListener struct {
	NetNS  uint32
	Port   uint16
	Family uint16
	// Retransmits counts the SYN-ACKs sent again; Clients the request
	// sockets (clients) they went to that never answered, AckedClients
	// those whose handshake-completing ACK found the accept queue full.
	Retransmits, Clients, AckedClients uint64
	// Last is when the last one was sent (CLOCK_MONOTONIC).
	Last time.Duration
	// SynQueue is the listener's request sockets (its SYN queue) at the
	// last one, SynQueueMax the most seen at any; AcceptQueue and
	// AcceptLimit its accept queue then.
	SynQueue, SynQueueMax    uint32
	AcceptQueue, AcceptLimit uint32
}

// SynackRetransmits reads the listeners' SYN-ACK retransmission counters;
// nil when the kernel has no tcp_retransmit_synack tracepoint.
func (t *Tracer) SynackRetransmits() ([]SynackListener, error) {
	m := t.coll.Maps[bpf.TcpwatchMapSynackListeners]
	if m == nil || t.attached[bpf.TcpwatchProgTwSynackRetransmit] == nil {
		return nil, nil
	}
	var (
		out []SynackListener
		k   bpf.TcpwatchTwListenKey
		v   bpf.TcpwatchTwSynack
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, SynackListener{NetNS: k.Netns, Port: k.Port, Family: k.Family,
			Retransmits: v.Retransmits, Clients: v.Clients, AckedClients: v.AckedClients,
			Last: time.Duration(v.LastNs), SynQueue: v.SynQueue, SynQueueMax: v.SynQueueMax,
			AcceptQueue: v.AcceptQueue, AcceptLimit: v.AcceptLimit})
	}
	if err := it.Err(); err != nil && !errors.Is(err, ebpf.ErrIterationAborted) {
		return out, fmt.Errorf("reading the listeners' SYN-ACK retransmissions: %w", err)
	}
	return out, nil
}
