package words

import (
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// Every verdict has its own words, and they cite the figures that decided it.
func TestEveryVerdictIsWorded(t *testing.T) {
	for _, v := range tracker.Verdicts {
		n := &tracker.Narrative{Verdict: v, Final: !v.Episode(), Retransmits: 3, Probes: 2, Errno: 110,
			Outage: 3 * time.Second, GiveUpIn: time.Second, RTOs: []time.Duration{200 * time.Millisecond, 400 * time.Millisecond},
			RTOMax: tcp.RTOMaxDefault, Budget: tracker.Budget{Limit: 3 * time.Second, Setting: "tcp_retries2", Value: 3},
			Settings: tcp.Settings{Retries2: 3, KeepaliveTime: 2 * time.Second, KeepaliveIntvl: time.Second, KeepaliveProbes: 3}}
		sum, why := Summary(n), Explanation(n)
		if sum == "" || sum == string(v) || why == "" {
			t.Errorf("%s: summary %q explanation %q", v, sum, why)
		}
		if strings.Contains(sum+why, "%!") {
			t.Errorf("%s: formatting error in %q / %q", v, sum, why)
		}
	}
}

func TestBudgetText(t *testing.T) {
	for _, tc := range []struct {
		b    tracker.Budget
		want string
	}{
		{tracker.Budget{Limit: 924600 * time.Millisecond, Setting: "tcp_retries2", Value: 15}, "tcp_retries2=15 allows 924.6s from the first retransmission (tcp_model_timeout: 1023 × 200ms + 6 × 120s)"},
		{tracker.Budget{Limit: 102200 * time.Millisecond, Setting: "tcp_orphan_retries", Value: 0}, "tcp_orphan_retries=0 (taken as 8)"},
		{tracker.Budget{Limit: 30 * time.Second, Setting: "TCP_USER_TIMEOUT", Value: 30000}, "TCP_USER_TIMEOUT=30s replaces"},
	} {
		if got := BudgetText(&tracker.Narrative{Budget: tc.b, RTOMax: tcp.RTOMaxDefault}); !strings.Contains(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.b, got, tc.want)
		}
	}
}

// Explanations say only what the kernel did: no RFC 6069 revert unless the
// RTOs seen stopped doubling; no application for an orphan.
func TestExplanationFollowsTheFacts(t *testing.T) {
	n := &tracker.Narrative{Verdict: tracker.Stalled, Retransmits: 3, SkErrSoft: 101, RTOMax: tcp.RTOMaxDefault,
		RTOs: []time.Duration{204 * time.Millisecond, 408 * time.Millisecond, 816 * time.Millisecond}}
	if why := Explanation(n); strings.Contains(why, "6069") || !strings.Contains(why, "doubles") {
		t.Errorf("a doubling RTO explained as a revert: %q", why)
	}
	n.BackoffReverted, n.SkErrSoft = true, 113
	if why := Explanation(n); !strings.Contains(why, "RFC 6069") {
		t.Errorf("a reverted backoff not explained: %q", why)
	}
	n.Orphan = true
	if why := Explanation(n); !strings.Contains(why, "no application") {
		t.Errorf("an orphan explained as if an application waited: %q", why)
	}
}
