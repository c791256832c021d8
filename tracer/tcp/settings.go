package tcp

import "time"

// Settings are the knobs that decide when the kernel gives up, as they were
// for this socket at the moment of the event.
type Settings struct {
	Retries2   uint8
	SynRetries uint8 // the socket's own (TCP_SYNCNT) or the namespace's tcp_syn_retries
	// SynLinearTimeouts is tcp_syn_linear_timeouts (6.18+): the first SYN
	// retransmissions keep the initial RTO instead of doubling.
	SynLinearTimeouts uint8
	OrphanRetries     uint8 // tcp_orphan_retries: 0 means 8 while the RTO is below its maximum
	KeepaliveOn       bool
	KeepaliveTime     time.Duration
	KeepaliveIntvl    time.Duration
	KeepaliveProbes   uint8
	UserTimeout       time.Duration
}
