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

func TestProjectGiveUp(t *testing.T) {
	last := 10 * time.Second
	budget := RetransmitBudget(15, 0)
	// Doubling from 200ms: the first expiry at or past last + budget.
	got := ProjectGiveUp(last+budget-200*time.Millisecond, last, 200*time.Millisecond, 0, true, false)
	if got < last+budget-200*time.Millisecond || got > last+budget+RTOMaxDefault {
		t.Errorf("doubling: %v", got-last)
	}
	// Reverted backoff: expiries every RTO, so death within one RTO of the deadline.
	deadline := last + 3*time.Second
	got = ProjectGiveUp(deadline, last, 204*time.Millisecond, 0, false, false)
	if got < deadline || got >= deadline+204*time.Millisecond {
		t.Errorf("reverted: %v past the deadline", got-deadline)
	}
	// TCP_USER_TIMEOUT clamps the last RTO to the deadline itself.
	if got := ProjectGiveUp(deadline, last, time.Second, 0, true, true); got != deadline {
		t.Errorf("clamped: %v, want the deadline", got-last)
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
