package tcp

import (
	"math/bits"
	"time"

	"github.com/tcpwatch/tcpwatch/bpf"
)

const (
	tcpRTOMin = 200 * time.Millisecond // TCP_RTO_MIN
	// TCP_RTO_MAX (tunable since 6.15): the kernel half's own value
	// (record.h), which it writes in rto_max_ms when the socket has none.
	tcpRTOMax      = time.Duration(bpf.TcpwatchTwTcpLimitTW_TCP_RTO_MAX_MS) * time.Millisecond
	tcpTimeoutInit = time.Second // TCP_TIMEOUT_INIT: the first SYN's RTO
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

// OrphanBudget is the budget of a socket no process holds any more: the
// kernel counts tcp_orphan_retries instead of tcp_retries2, and 0 means 8
// while the RTO is below its maximum (tcp_orphan_retries()).
func OrphanBudget(orphanRetries uint8, rto, rtoMax time.Duration) time.Duration {
	if rtoMax <= 0 {
		rtoMax = tcpRTOMax
	}
	if orphanRetries == 0 && rto < rtoMax {
		orphanRetries = 8
	}
	return modelTimeout(orphanRetries, tcpRTOMin, rtoMax)
}

// KeepaliveBudget is how long an idle connection whose peer went silent
// lives: keepalive_time, then keepalive_probes probes keepalive_intvl apart
// (7200 + 9 × 75 = 7875 s by default).
func KeepaliveBudget(s Settings) time.Duration {
	return s.KeepaliveTime + time.Duration(s.KeepaliveProbes)*s.KeepaliveIntvl
}

// ProjectGiveUp simulates the retransmission timer from its last expiry at
// last with the RTO rto: the kernel checks its deadline only when the RTO
// fires, so death comes at the first expiry at or past it. doubling says
// whether the RTO doubles at each expiry (exponential backoff) or stays
// (RFC 6069 revert); clamp, set for TCP_USER_TIMEOUT, means the kernel
// shortens the last RTO to end exactly at the deadline.
func ProjectGiveUp(deadline, last, rto, rtoMax time.Duration, doubling, clamp bool) time.Duration {
	if rtoMax <= 0 {
		rtoMax = tcpRTOMax
	}
	if rto <= 0 {
		rto = tcpRTOMin
	}
	t := last
	for i := 0; i < 1024 && t < deadline; i++ {
		if doubling && i > 0 {
			rto = min(2*rto, rtoMax)
		}
		next := t + rto
		if clamp && next > deadline {
			next = deadline
		}
		t = next
	}
	return t
}

// ModelTimeoutFormula spells out tcp_model_timeout() for a boundary, as
// the kernel computes it: "31 × 200ms" or "1023 × 200ms + 6 × 120s".
func ModelTimeoutFormula(boundary uint8, rtoBase, rtoMax time.Duration) (lowTerms int64, highTerms int, rtoMaxUsed time.Duration) {
	if rtoMax <= 0 {
		rtoMax = tcpRTOMax
	}
	thresh := uint8(bits.Len64(uint64(rtoMax/rtoBase)) - 1)
	if boundary <= thresh {
		return (int64(2) << boundary) - 1, 0, rtoMax
	}
	return (int64(2) << thresh) - 1, int(boundary - thresh), rtoMax
}

// RTOMin is TCP_RTO_MIN, the base of the retransmission budget.
const RTOMin = tcpRTOMin

// RTOMaxDefault is TCP_RTO_MAX, the RTO's cap unless tcp_rto_max_ms or
// TCP_RTO_MAX_MS (6.15+) lowers it.
const RTOMaxDefault = tcpRTOMax

// TimeoutInit is TCP_TIMEOUT_INIT, the first SYN's RTO.
const TimeoutInit = tcpTimeoutInit
