package tcp

import (
	"testing"
	"time"
)

// Figures from kernel-notes: tcp_model_timeout() with the default limits.
func TestRetransmitBudget(t *testing.T) {
	tests := []struct {
		retries2 uint8
		rtoMax   time.Duration
		want     time.Duration
	}{
		{15, 0, 924600 * time.Millisecond},
		{15, 120 * time.Second, 924600 * time.Millisecond},
		{3, 0, 3 * time.Second},
		{5, 0, 12600 * time.Millisecond},
		{9, 0, 204600 * time.Millisecond},
		{10, 0, 324600 * time.Millisecond},
		{15, 60 * time.Second, 102200*time.Millisecond + 7*60*time.Second},
	}
	for _, tc := range tests {
		if got := RetransmitBudget(tc.retries2, tc.rtoMax); got != tc.want {
			t.Errorf("RetransmitBudget(%d, %v) = %v, want %v", tc.retries2, tc.rtoMax, got, tc.want)
		}
	}
}

func TestSynBudget(t *testing.T) {
	for _, tc := range []struct {
		retries uint8
		want    time.Duration
	}{{6, 127 * time.Second}, {1, 3 * time.Second}, {2, 7 * time.Second}} {
		if got := SynBudget(tc.retries, 0); got != tc.want {
			t.Errorf("SynBudget(%d) = %v, want %v", tc.retries, got, tc.want)
		}
	}
}

func TestOrphanBudget(t *testing.T) {
	// tcp_orphan_retries=0 means 8 while the RTO is below its maximum:
	// 511 × 200ms = 102.2 s.
	if got := OrphanBudget(0, 200*time.Millisecond, 0); got != 102200*time.Millisecond {
		t.Errorf("OrphanBudget(0) = %v", got)
	}
	if got := OrphanBudget(0, RTOMaxDefault, 0); got != 200*time.Millisecond {
		t.Errorf("OrphanBudget(0) at RTO max = %v, want 1 × 200ms", got)
	}
	if got := OrphanBudget(2, time.Second, 0); got != 1400*time.Millisecond {
		t.Errorf("OrphanBudget(2) = %v", got)
	}
}

// The expected times are worked out by hand from tcp_retransmit_timer:
// after an expiry the RTO doubles, and the kernel kills at the first expiry
// where the time since the first retransmission reaches the budget.
func TestGiveUpAt(t *testing.T) {
	ms := time.Millisecond
	first := 10 * time.Second
	three := RetransmitBudget(3, 0) // 15 × 200ms = 3s
	for _, tc := range []struct {
		name            string
		budget          time.Duration
		last, rto       time.Duration
		doubling, clamp bool
		want            time.Duration
	}{
		// Expiries 0.4, 1.2, 2.8 (< 3s), 6.0 s after the first retransmission.
		{"retries2=3 at the first retransmission", three, first, 200 * ms, true, false, first + 6*time.Second},
		{"retries2=3 at the third", three, first + 1200*ms, 800 * ms, true, false, first + 6*time.Second},
		{"retries2=3 at the fourth", three, first + 2800*ms, 1600 * ms, true, false, first + 6*time.Second},
		// 0.408, 1.224, ..., 208.488 (RTO 104.448s), then 120s each:
		// 928.488 is the first past 924.6.
		{"retries2=15, 204ms", RetransmitBudget(15, 0), first, 204 * ms, true, false, first + 928488*ms},
		// With exactly 200ms, 924.4 falls short of 924.6: one more 120s.
		{"retries2=15, 200ms", RetransmitBudget(15, 0), first, 200 * ms, true, false, first + 1044400*ms},
		// Reverted backoff: every 204ms; 15 × 204ms = 3.06s is the first past 3s.
		{"reverted", three, first, 204 * ms, false, false, first + 3060*ms},
		// TCP_USER_TIMEOUT=5s: 2s, then the 4s RTO clamped to the 3s left.
		{"user timeout", 5 * time.Second, first, time.Second, true, true, first + 5*time.Second},
	} {
		if got := GiveUpAt(first, tc.budget, tc.last, tc.rto, 0, tc.doubling, tc.clamp); got != tc.want {
			t.Errorf("%s: %v after the first retransmission, want %v", tc.name, got-first, tc.want-first)
		}
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		code           uint32
		signal, status int
	}{{9, 9, 0}, {9 | 0x80, 9, 0}, {3 << 8, 0, 3}, {0, 0, 0}} {
		if s, st := ExitSignal(tc.code), ExitStatus(tc.code); s != tc.signal || st != tc.status {
			t.Errorf("exit code %#x: signal %d status %d, want %d %d", tc.code, s, st, tc.signal, tc.status)
		}
	}
}

// The contract's constants come from the kernel half's bindings: the
// kernel's TCP_RTO_MAX (include/net/tcp.h, 120 s) and the -1 that says a
// kernel gave no reset reason, signed again after bpf2go made it unsigned.
func TestContractConstants(t *testing.T) {
	if RTOMaxDefault != 120*time.Second {
		t.Errorf("RTOMaxDefault = %v, want TCP_RTO_MAX (120s)", RTOMaxDefault)
	}
	if RSTReasonUnknown != -1 || FallbackResetReasons.Name(RSTReasonUnknown) != "" {
		t.Errorf("RSTReasonUnknown = %d (named %q), want -1, unnamed", RSTReasonUnknown, FallbackResetReasons.Name(RSTReasonUnknown))
	}
}
