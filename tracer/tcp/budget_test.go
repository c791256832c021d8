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
