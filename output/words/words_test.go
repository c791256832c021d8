package words

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// sample is a narrative of verdict v with figures that each sentence
// must cite: 3 retransmissions, 2 probes, a 3 s outage, 1 s to go, the
// errno the verdict implies (none for an episode).
func sample(e *Entry) *tracker.Narrative {
	n := &tracker.Narrative{Verdict: e.Verdict, Final: !e.Episode, Retransmits: 3, Probes: 2, Errno: e.Errno,
		Remote: netip.MustParseAddrPort("192.0.2.7:5432"), ResetReason: "TCP_ABORT_ON_CLOSE", ResetState: tcp.StateEstablished,
		Owner: tracker.Owner{PID: 4242, Comm: "psql"}, ExitSignal: 9,
		Outage: 3 * time.Second, GiveUpIn: time.Second, RTOs: []time.Duration{200 * time.Millisecond, 400 * time.Millisecond},
		RTOMax: tcp.RTOMaxDefault, Budget: tracker.Budget{Limit: 3 * time.Second, Setting: "tcp_retries2", Value: 3},
		Settings:         tcp.Settings{Retries2: 3, KeepaliveTime: 2 * time.Second, KeepaliveIntvl: time.Second, KeepaliveProbes: 3},
		CloseWaitSockets: 2, CloseWaitFor: 3 * time.Second,
		Ports: tracker.PortUse{Failures: 1, Known: true, TimeWait: 3, Other: 1, RangeLo: 40000, RangeHi: 40003}}
	if e.Episode {
		n.Errno = 0
	}
	switch e.Verdict {
	case tracker.ZeroWindow:
		n.Retransmits, n.GiveUpIn = 0, 0
		n.WindowFacts = tracker.WindowFacts{WindowProbes: 3, ProbesAnswered: 2, NotSent: 4096, Endless: true}
	case tracker.AcceptQueueOverflow:
		n.Local = netip.MustParseAddrPort("192.0.2.1:443")
		n.ListenerFacts = tracker.ListenerFacts{QueueLen: 5, QueueLimit: 4, TurnedAway: 17, Cause: tracker.NotAccepting}
	case tracker.SynackUnanswered:
		n.Local = netip.MustParseAddrPort("192.0.2.1:443")
		n.ListenerFacts = tracker.ListenerFacts{QueueLen: 0, QueueLimit: 4, SynackRetransmits: 12, SynackClients: 6,
			SynQueueLen: 5, SynQueueMax: 5, CookiesSent: 9, Syncookies: 1, CookiesKnown: true, Cause: tracker.SynFlood}
	}
	return n
}

// Every verdict the tracker gives is registered once, as final or episode
// exactly as the tracker treats it, with words and a severity.
func TestRegistry(t *testing.T) {
	seen := map[tracker.Verdict]int{}
	for i := range Registry {
		e := &Registry[i]
		seen[e.Verdict]++
		if !slices.Contains(tracker.Verdicts, e.Verdict) {
			t.Errorf("%s is registered but the tracker never gives it", e.Verdict)
		}
		if e.Episode != e.Verdict.Episode() {
			t.Errorf("%s: registered episode=%v, the tracker says %v", e.Verdict, e.Episode, e.Verdict.Episode())
		}
		if e.Summary == nil || e.Explain == nil || e.Family == "" {
			t.Errorf("%s: no words or no family", e.Verdict)
		}
		if e.Episode && e.Severity == Failure || !e.Episode && e.Severity == Warning {
			t.Errorf("%s: severity %s for an episode=%v", e.Verdict, e.Severity, e.Episode)
		}
		if Lookup(e.Verdict) != e {
			t.Errorf("%s: Lookup finds another entry", e.Verdict)
		}
	}
	for _, v := range tracker.Verdicts {
		if seen[v] != 1 {
			t.Errorf("%s is registered %d times", v, seen[v])
		}
	}
}

// Each verdict's summary, word for word, for the same figures.
func TestEveryVerdictIsWorded(t *testing.T) {
	want := map[tracker.Verdict]string{
		tracker.PeerClosed:          "the peer closed the connection (FIN), then reset it: its process closed the socket or died",
		tracker.LocalClosed:         "this side closed the connection normally",
		tracker.LocalProcessExited:  "the owning process psql (pid 4242) was killed by SIGKILL with the connection open; its kernel closed it with FIN, 3s into an outage (3 RTO retransmissions unanswered)",
		tracker.LocalAbort:          "this side aborted the connection with RST (TCP_ABORT_ON_CLOSE)",
		tracker.PeerReset:           "the peer reset the connection (RST): ECONNRESET (104, connection reset by peer)",
		tracker.PeerLostState:       "the peer answered 3 retransmissions with RST after 3s of silence: it no longer had the connection (its host rebooted, or its side ended it while the path was silent) (ECONNRESET (104, connection reset by peer))",
		tracker.Stalled:             "the peer has stopped acknowledging: 3 RTO retransmissions, no ACK for 3s; the kernel gives up in about 1s",
		tracker.Recovered:           "the peer answered again after a 3s outage; 3 RTO retransmissions went unanswered before it; the application saw only a delay",
		tracker.RetransmitTimeout:   "the peer stopped acknowledging and the kernel gave up after 3 retransmissions over 3s: ETIMEDOUT (110, connection timed out)",
		tracker.HostUnreachable:     "the peer is unreachable: after 3 retransmissions over 3s the kernel gave up with EHOSTUNREACH (113, no route to host)",
		tracker.KeepaliveProbing:    "keepalive probe 2 of 3 sent, the previous one went unanswered: the idle peer has been silent for 3s; the kernel gives up in about 1s",
		tracker.KeepaliveTimeout:    "the idle peer answered none of 2 keepalive probes: the kernel reset the connection after 3s of silence (ETIMEDOUT (110, connection timed out))",
		tracker.ConnectRefused:      "connect() to 192.0.2.7:5432 was refused: the peer answered SYN with RST (ECONNREFUSED (111, connection refused))",
		tracker.ConnectTimeout:      "connect() to 192.0.2.7:5432 timed out: 3 SYN retransmissions unanswered over 3s (ETIMEDOUT (110, connection timed out))",
		tracker.ConnectAbandoned:    "the application gave up on connect() to 192.0.2.7:5432 after 3s: 3 SYN retransmissions unanswered, long before the kernel would have (tcp_syn_retries=3: 3s)",
		tracker.Untold:              "the connection is gone from the kernel's socket table but how it ended was not seen, with no kernel record counted lost (stats.lost) nor skipped (stats.skipped); it was last stalled (3 RTO retransmissions, no ACK for 3s)",
		tracker.CloseWaitStuck:      "psql (pid 4242) holds 2 connections its peers closed, the oldest in CLOSE_WAIT for at least 3s: it has not called close() on them",
		tracker.LocalPortsExhausted: "connect() to 192.0.2.7:5432 failed with EADDRNOTAVAIL (99, cannot assign requested address): no local port was free toward it: 3 sockets in TIME_WAIT and 1 other to it hold ports of ip_local_port_range 40000-40003 (4 ports); tcp_tw_reuse=0 (off)",
		tracker.ZeroWindow:          "the peer's application stopped reading: its receive window has been closed (0 bytes) for 3s, 2 window probes answered with a closed window, 4096 bytes from psql (pid 4242) wait to be sent; nothing will end it: answered probes never count toward tcp_retries2 and TCP_USER_TIMEOUT is not set",
		tracker.AcceptQueueOverflow: "the server stopped accepting: the accept queue of 192.0.2.1:443 is full (5 waiting for accept(), backlog 4) and the kernel turned away 17 SYNs or handshakes in 3s; its clients' connect() retries, then times out: the application is not accepting, call the owners of psql (pid 4242)",
		tracker.SynackUnanswered:    "a SYN flood, or clients that vanish after their SYN: the SYN queue of 192.0.2.1:443 is full: 12 SYN-ACKs retransmitted to 6 clients that never answered in 3s (SYN queue 5, accept queue 0 of 4); SYN cookies in use: 9 sent in its network namespace (tcp_syncookies=1); the application is fine: call the network or security team (spoofed SYNs, or a firewall that lets SYNs in and drops what follows)",
	}
	// What each explanation must cite of the kernel's figures and mechanism.
	cites := map[tracker.Verdict][]string{
		tracker.PeerClosed:          {"CLOSE_WAIT", "TCP_ABORT_ON_DATA", "EPIPE"},
		tracker.LocalClosed:         {"FIN_WAIT1"},
		tracker.LocalProcessExited:  {"PF_EXITING", "RTOs 200ms → 400ms", "tcp_retries2=3 allows 3s"},
		tracker.LocalAbort:          {"unread data", "ECONNRESET"},
		tracker.PeerReset:           {"in ESTABLISHED", "ECONNRESET (104"},
		tracker.PeerLostState:       {"RTOs 200ms → 400ms", "NO_SOCKET", "ECONNRESET (104"},
		tracker.Stalled:             {"fired 3 times", "RTOs 200ms → 400ms", "tcp_retries2=3 allows 3s", "about 1s from now", "will then get ETIMEDOUT"},
		tracker.Recovered:           {"Loss back to", "3s, RTOs 200ms → 400ms"},
		tracker.RetransmitTimeout:   {"tcp_retries2=3 allows 3s", "RTOs were 200ms → 400ms", "sk_err=ETIMEDOUT (110"},
		tracker.HostUnreachable:     {"sk_err_soft=unknown", "RTOs 200ms → 400ms", "EHOSTUNREACH (113"},
		tracker.KeepaliveProbing:    {"keepalive_time=2s idle", "icsk_probes_out=2; when it reaches 3", "gets ETIMEDOUT"},
		tracker.KeepaliveTimeout:    {"keepalive_probes=3", "probe 2", "TCP_ABORT_ON_CLOSE", "ETIMEDOUT (110"},
		tracker.ConnectRefused:      {"SYN_SENT reports ECONNREFUSED"},
		tracker.ConnectTimeout:      {"tcp_retries2=3 allows 3s", "sk_err=ETIMEDOUT (110"},
		tracker.ConnectAbandoned:    {"after 3s", "its own connect timeout", "tcp_retries2=3 allows 3s"},
		tracker.Untold:              {"stats.lost", "sock_diag"},
		tracker.CloseWaitStuck:      {"CLOSE_WAIT", "close()", "too many open files", "within one scan period"},
		tracker.LocalPortsExhausted: {"inet_hash_connect()", "TIME_WAIT for 60 s", "EADDRNOTAVAIL", "tcp_tw_reuse"},
		tracker.ZeroWindow:          {"tcp_probe_timer", "resets icsk_probes_out to 0", "window of 0 bytes", "tcp_retries2=3", "Without TCP_USER_TIMEOUT"},
		tracker.AcceptQueueOverflow: {"holds 4", "has 5", "sk_acceptq_is_full", "psql (pid 4242)", "tcp_retransmit_synack"},
		tracker.SynackUnanswered:    {"tcp_retransmit_synack", "tcp_synack_retries", "backlog 4", "had room (0 of 4)", "tcp_syncookies=1) sent 9 SYN cookies", "per namespace"},
	}
	for i := range Registry {
		e := &Registry[i]
		n := sample(e)
		if got := Summary(n); got != want[e.Verdict] {
			t.Errorf("%s summary:\n got %q\nwant %q", e.Verdict, got, want[e.Verdict])
		}
		why := Explanation(n)
		if len(cites[e.Verdict]) == 0 {
			t.Errorf("%s: no expectation for its explanation", e.Verdict)
		}
		for _, c := range cites[e.Verdict] {
			if !strings.Contains(why, c) {
				t.Errorf("%s explanation does not cite %q: %q", e.Verdict, c, why)
			}
		}
		if strings.Contains(want[e.Verdict]+why, "%!") {
			t.Errorf("%s: formatting error in %q", e.Verdict, why)
		}
	}
}

// The errno a verdict implies: the narrative's own first; for a timeout,
// an unreachable soft error wins over ETIMEDOUT, as in tcp_write_err().
func TestImpliedErrno(t *testing.T) {
	for _, tc := range []struct {
		n    tracker.Narrative
		want unix.Errno
	}{
		{tracker.Narrative{Verdict: tracker.Stalled}, unix.ETIMEDOUT},
		{tracker.Narrative{Verdict: tracker.Stalled, SkErrSoft: int32(unix.EHOSTUNREACH)}, unix.EHOSTUNREACH},
		{tracker.Narrative{Verdict: tracker.Stalled, SkErrSoft: int32(unix.EPROTO)}, unix.ETIMEDOUT},
		{tracker.Narrative{Verdict: tracker.KeepaliveProbing, SkErrSoft: int32(unix.ENETUNREACH)}, unix.ENETUNREACH},
		{tracker.Narrative{Verdict: tracker.PeerReset}, unix.ECONNRESET},
		{tracker.Narrative{Verdict: tracker.PeerReset, Errno: int32(unix.EPIPE)}, unix.EPIPE},
		{tracker.Narrative{Verdict: tracker.ConnectRefused, SkErrSoft: int32(unix.EHOSTUNREACH)}, unix.ECONNREFUSED},
		{tracker.Narrative{Verdict: tracker.LocalClosed}, 0},
	} {
		if got := ImpliedErrno(&tc.n); got != int32(tc.want) {
			t.Errorf("%s soft=%d errno=%d: implies %d, want %d", tc.n.Verdict, tc.n.SkErrSoft, tc.n.Errno, got, tc.want)
		}
	}
	n := &tracker.Narrative{Verdict: tracker.Stalled, SkErrSoft: int32(unix.EHOSTUNREACH), Retransmits: 2, RTOMax: tcp.RTOMaxDefault}
	if why := Explanation(n); !strings.Contains(why, "will then get EHOSTUNREACH (113, no route to host)") {
		t.Errorf("a stall with an unreachable soft error explained as: %q", why)
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

// An untold end claims lost records only when the kernel counted some
// while the connection was tracked (seen: "kernel records were lost" with
// stats.lost 0, when a socket table was applied before the end it missed
// was read).
func TestUntoldClaimsOnlyCountedLosses(t *testing.T) {
	n := &tracker.Narrative{Verdict: tracker.Untold, Final: true, Retransmits: 4, Outage: 6 * time.Second}
	for _, lost := range []bool{false, true} {
		n.LostRecords = lost
		said := Summary(n) + " " + Explanation(n)
		if claims := strings.Contains(said, "records were lost") || strings.Contains(said, "dropped records"); claims != lost {
			t.Errorf("lost_records %v: claims a loss %v: %q", lost, claims, said)
		}
		if !strings.Contains(Summary(n), "(stats.lost)") || !strings.Contains(Summary(n), "stats.skipped") || !strings.Contains(Summary(n), "stalled (4 RTO retransmissions") {
			t.Errorf("lost_records %v: the summary names no counter or no outage: %q", lost, Summary(n))
		}
	}
}

// Retransmissions that failed here (Linux 6.1 with the cable pulled: the
// original still sat in the failed neighbour's queue) are not told as
// packets that left this host.
func TestFailedSendsNeverLeft(t *testing.T) {
	n := &tracker.Narrative{Verdict: tracker.RetransmitTimeout, Final: true, Retransmits: 3, FailedSends: 3,
		Errno: int32(unix.ETIMEDOUT), Outage: 2848 * time.Millisecond, RTOMax: tcp.RTOMaxDefault,
		RTOs:      []time.Duration{204 * time.Millisecond, 408 * time.Millisecond, 816 * time.Millisecond},
		DropFacts: tracker.DropFacts{DropsSeen: true, Drops: []tracker.Drop{{Reason: "NEIGH_FAILED", Count: 1}}}}
	sum := Summary(n)
	if strings.Contains(sum, "left this host") || !strings.Contains(sum, "every one failed here") || !strings.Contains(sum, "1 packet dropped here") {
		t.Errorf("3 failed sends and the original dropped: %q", sum)
	}
	n.FailedSends, n.LeftHost = 1, 1
	if sum := Summary(n); !strings.Contains(sum, "1 failed here") || !strings.Contains(sum, "1 that left this host") {
		t.Errorf("1 failed, 1 dropped, 1 left: %q", sum)
	}
}

// Every notice the tracker tells has its words, and only those.
func TestEveryNoticeIsWorded(t *testing.T) {
	var worded []string
	for _, e := range Notices {
		worded = append(worded, e.Kind)
		n := &tracker.Notice{Kind: e.Kind}
		if NoticeSummary(n) == e.Kind || NoticeExplanation(n) == "" {
			t.Errorf("%s: no summary or explanation", e.Kind)
		}
	}
	slices.Sort(worded)
	kinds := slices.Sorted(slices.Values(tracker.NoticeKinds))
	if !slices.Equal(worded, kinds) {
		t.Errorf("worded notices %v, the tracker tells %v", worded, kinds)
	}
}

// A listener's sentence ends with whom to call, by its cause.
func TestListenerCauseNamesTheTeam(t *testing.T) {
	l := netip.MustParseAddrPort("192.0.2.1:443")
	owner := tracker.Owner{PID: 7, Comm: "nginx"}
	for _, tc := range []struct {
		v     tracker.Verdict
		facts tracker.ListenerFacts
		want  []string
	}{
		{tracker.AcceptQueueOverflow, tracker.ListenerFacts{QueueLen: 0, QueueLimit: 1, TurnedAway: 8, SynackRetransmits: 3, SynackAcked: 2, Cause: tracker.BacklogTooSmall},
			[]string{"the backlog of 192.0.2.1:443 is too small", "8 SYNs or handshakes in 2s", "3 SYN-ACKs retransmitted to 2 clients whose ACK found the queue full", "raise the listen() backlog of nginx (pid 7)"}},
		{tracker.SynackUnanswered, tracker.ListenerFacts{QueueLimit: 64, SynackRetransmits: 6, SynackClients: 3, SynQueueLen: 4,
			SynQueueFullDrops: 2, Syncookies: 0, CookiesKnown: true, Cause: tracker.HandshakesUnanswered},
			[]string{"clients of 192.0.2.1:443 do not finish their handshake: 6 SYN-ACKs retransmitted to 3 clients that never answered in 2s (SYN queue 4, accept queue 0 of 64)",
				"2 SYNs dropped in its network namespace for a full SYN queue (tcp_syncookies=0)", "call the network team"}},
	} {
		n := &tracker.Narrative{Verdict: tc.v, Local: l, Owner: owner, Outage: 2 * time.Second, ListenerFacts: tc.facts}
		got := Summary(n)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s %s: %q lacks %q", tc.v, tc.facts.Cause, got, w)
			}
		}
	}
}
