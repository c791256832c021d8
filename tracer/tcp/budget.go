package tcp

import (
	"math/bits"
	"time"
)

const (
	tcpRTOMin      = 200 * time.Millisecond // TCP_RTO_MIN
	tcpRTOMax      = 120 * time.Second      // TCP_RTO_MAX (tunable since 6.15)
	tcpTimeoutInit = time.Second            // TCP_TIMEOUT_INIT: the first SYN's RTO
)

// modelTimeout mirrors the kernel's tcp_model_timeout(): the time that
// `boundary` retransmissions take when the RTO starts at rtoBase and
// doubles up to rtoMax. The kernel gives up on a connection once this much
// time has passed since its first retransmission.
func modelTimeout(boundary uint8, rtoBase, rtoMax time.Duration) time.Duration {
	if rtoMax <= 0 {
		rtoMax = tcpRTOMax
	}
	thresh := uint8(bits.Len64(uint64(rtoMax/rtoBase)) - 1) // ilog2
	if boundary <= thresh {
		return time.Duration((uint64(2)<<boundary)-1) * rtoBase
	}
	return time.Duration((uint64(2)<<thresh)-1)*rtoBase + time.Duration(boundary-thresh)*rtoMax
}

// RetransmitBudget is how long an established connection may go unanswered
// after its first retransmission before the kernel kills it: 924.6 s for
// the default tcp_retries2 = 15. TCP_USER_TIMEOUT, when set, replaces it.
func RetransmitBudget(retries2 uint8, rtoMax time.Duration) time.Duration {
	return modelTimeout(retries2, tcpRTOMin, rtoMax)
}

// SynBudget is how long connect() retransmits its SYN before ETIMEDOUT:
// 127 s for the default tcp_syn_retries = 6.
func SynBudget(synRetries uint8, rtoMax time.Duration) time.Duration {
	return modelTimeout(synRetries, tcpTimeoutInit, rtoMax)
}
