package tracker

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Both ends of a connection between two namespaces of this host: the
// server's keepalive ended it during an outage; when the path came back,
// the client's next segment met the server kernel's RST. The client's final
// is joined with the server's: its verdict, its namespace, how long before.
// Without the other end in sight, nothing is joined.
func TestPeerEndJoinsBothSides(t *testing.T) {
	server, client := netip.MustParseAddrPort("10.0.0.2:5432"), netip.MustParseAddrPort("10.0.0.1:40000")
	for _, seeBoth := range []bool{true, false} {
		var c collect
		tr := New(Config{}, c.emit)
		if seeBoth {
			kill := wire.Event{Mono: at(10000), Kind: wire.KindKeepalive, Cookie: 1, NetNS: 2, Local: server, Remote: client,
				State: tcp.StateEstablished, Flags: wire.FlagKeepaliveKill, ProbesOut: 3, AckAge: at(5000),
				Settings: tcp.Settings{KeepaliveOn: true, KeepaliveProbes: 3}}
			tr.Handle(&kill)
			closed := wire.Event{Mono: at(10000), Kind: wire.KindState, Cookie: 1, NetNS: 2, Local: server, Remote: client,
				OldState: tcp.StateEstablished, State: tcp.StateClose, SkErr: int32(unix.ETIMEDOUT)}
			tr.Handle(&closed)
		}
		rst := wire.Event{Mono: at(33000), Kind: wire.KindRecvReset, Cookie: 2, NetNS: 1, Local: client, Remote: server,
			State: tcp.StateEstablished}
		tr.Handle(&rst)
		closed := wire.Event{Mono: at(33000), Kind: wire.KindState, Cookie: 2, NetNS: 1, Local: client, Remote: server,
			OldState: tcp.StateEstablished, State: tcp.StateClose, SkErr: int32(unix.ECONNRESET)}
		tr.Handle(&closed)
		tr.Flush(at(40000))
		n := c.got[len(c.got)-1]
		if n.Verdict != PeerReset || n.NetNS != 1 {
			t.Fatalf("client's final: %s in netns %d", n.Verdict, n.NetNS)
		}
		switch {
		case seeBoth && (n.PeerEnd == nil || n.PeerEnd.Verdict != KeepaliveTimeout || n.PeerEnd.NetNS != 2 || n.PeerEnd.Before != 23*time.Second):
			t.Errorf("peer end %+v, want the server's keepalive_timeout in netns 2, 23s before", n.PeerEnd)
		case !seeBoth && n.PeerEnd != nil:
			t.Errorf("peer end %+v with only one side seen", n.PeerEnd)
		}
	}
}

// A keepalive probe answered after the path came back: the probe that got
// the answer is not among the unanswered, and the silence ends at the
// peer's ACK, not at the timer's next run that notices it.
func TestKeepaliveRecoveredCountsTheUnanswered(t *testing.T) {
	var c collect
	tr := New(Config{}, c.emit)
	s := tcp.Settings{KeepaliveOn: true, KeepaliveTime: 2 * time.Second, KeepaliveIntvl: time.Second, KeepaliveProbes: 5}
	base := wire.Event{Kind: wire.KindKeepalive, Cookie: 4, Local: cli, Remote: srv, State: tcp.StateEstablished, Settings: s}
	// Idle since 8s: probe 1 at 10s, probe 2 at 11s (told), answered at
	// 11.002s, noticed at the timer's run at 12s.
	for i, mono := range []int{10000, 11000} {
		ev := base
		ev.Mono, ev.Flags, ev.ProbesOut, ev.AckAge = at(mono), wire.FlagProbeSent, uint8(i+1), at(mono-8000)
		tr.Handle(&ev)
	}
	ans := base
	ans.Mono, ans.Flags, ans.AckAge = at(12000), wire.FlagProbeAnswered, at(998)
	tr.Handle(&ans)
	tr.Flush(at(13000))
	n := c.got[len(c.got)-1]
	if n.Verdict != Recovered || n.Probes != 1 || n.Outage != at(3002) {
		t.Errorf("%s after %d unanswered, silence %v; want recovered after 1, 3.002s (8s to 11.002s)", n.Verdict, n.Probes, n.Outage)
	}
}

// Connections that predate tcpwatch and stayed healthy end without a
// record in default mode: counted apart from those whose end was lost.
func TestReconcileTellsUnseenEndsFromLostOnes(t *testing.T) {
	for _, all := range []bool{false, true} {
		tr := New(Config{All: all}, func(*Narrative) {})
		tr.AddExisting(at(1000), time.Unix(1_800_000_000, 0), &Existing{Cookie: 1, Local: cli, Remote: srv,
			State: tcp.StateEstablished, Inode: 77})
		seen := wire.Event{Mono: at(1100), Kind: wire.KindState, Cookie: 2, Local: netip.MustParseAddrPort("10.0.0.1:2"),
			Remote: srv, OldState: tcp.StateSynSent, State: tcp.StateEstablished}
		tr.Handle(&seen)
		tr.Reconcile(at(5000), at(5000), func(uint32, uint64, netip.AddrPort, netip.AddrPort) bool { return false })
		s := tr.Stats()
		wantUnseen := uint64(1)
		if all {
			wantUnseen = 0 // --all reports every end: a missing one was lost
		}
		if s.EndedUnseen != wantUnseen || s.Reconciled != 2-wantUnseen {
			t.Errorf("all=%v: ended unseen %d, end lost %d; want %d and %d", all, s.EndedUnseen, s.Reconciled, wantUnseen, 2-wantUnseen)
		}
	}
}

// A cable replugged on the receiving side: the peer's ACKs come back, and
// in Loss the kernel resends the rest of its queue (retransmissions that no
// timer counted, the RTO back to 204ms) in the millisecond before it leaves
// Loss. Those are no expiries: the deadline does not move, and recovered
// counts only the timer's retransmissions before the answer.
func TestReplugDoesNotMoveTheDeadline(t *testing.T) {
	var c collect
	tr := New(Config{}, c.emit)
	base := wire.Event{Kind: wire.KindRetransmit, Cookie: 6, Local: cli, Remote: srv, State: tcp.StateEstablished,
		CAState: tcp.CALoss, RTOMax: 120 * time.Second, Settings: tcp.Settings{Retries2: 15}}
	now := 1000
	for i, rto := range []int{204, 408, 816} {
		if i > 0 {
			now += rto
		}
		ev := base
		ev.Mono, ev.Retransmits, ev.RTO = at(now), uint8(i+1), at(rto)
		tr.Handle(&ev)
	}
	now += 1000 // the path is back: the peer's ACKs, the queue resent
	for _, rto := range []int{816, 204} {
		ev := base
		ev.Mono, ev.Retransmits, ev.RTO = at(now), 3, at(rto)
		tr.Handle(&ev)
	}
	back := base
	back.Kind, back.Mono, back.CAState, back.OldCA = wire.KindCongState, at(now), tcp.CAOpen, tcp.CALoss
	tr.Handle(&back)
	tr.Flush(at(now + 1000))
	var stalled []Narrative
	for _, n := range c.got {
		if n.Verdict == Stalled {
			stalled = append(stalled, n)
		}
	}
	if len(stalled) != 3 {
		t.Fatalf("%d stalled lines, want one per timer expiry (3): %v", len(stalled), verdictsOf(c.got))
	}
	for _, n := range stalled[1:] {
		if at := n.Mono + n.GiveUpIn; at != stalled[0].Mono+stalled[0].GiveUpIn {
			t.Errorf("the deadline moved from %v to %v", stalled[0].Mono+stalled[0].GiveUpIn, at)
		}
	}
	r := c.got[len(c.got)-1]
	if r.Verdict != Recovered || r.Retransmits != 2 || len(r.RTOs) != 3 {
		t.Errorf("%s after %d unanswered, RTOs %v; want recovered after 2 (the third answered), RTOs of the 3 expiries", r.Verdict, r.Retransmits, r.RTOs)
	}
}

// Retransmissions that fail here (the cable pulled: -EBUSY, the original
// queued at the unresolved neighbour), then the held segment sent after
// the last expiry (the neighbour failed and freed it): the kernel restarted
// the timer for the doubled RTO then, and a stalled line says so with the
// deadline one RTO after that send. The same send after the peer answered
// (its ACK in the record's ack_age) is the queue resent: nothing moves.
func TestHeldSendRestartsTheTimer(t *testing.T) {
	for _, answered := range []bool{false, true} {
		var c collect
		tr := New(Config{}, c.emit)
		base := wire.Event{Kind: wire.KindRetransmit, Cookie: 7, Local: cli, Remote: srv, State: tcp.StateEstablished,
			CAState: tcp.CALoss, RTOMax: 120 * time.Second, Settings: tcp.Settings{Retries2: 3}, Detail: -16}
		now := 1000
		for i, rto := range []int{204, 408, 816} {
			if i > 0 {
				now += rto
			}
			ev := base
			ev.Mono, ev.Retransmits, ev.RTO, ev.AckAge = at(now), uint8(i+1), at(rto), at(now-796)
			tr.Handle(&ev)
		}
		held := base
		held.Detail, held.Retransmits, held.RTO = 0, 3, at(1632)
		held.Mono, held.AckAge = at(now+1100), at(now+1100-796)
		if answered {
			held.AckAge = at(5)
		}
		tr.Handle(&held)
		tr.Flush(at(now + 5000)) // tells it stalled once more, as of the flush: not counted
		var stalled []Narrative
		for _, n := range c.got {
			if n.Verdict == Stalled && n.Mono < at(now+5000) {
				stalled = append(stalled, n)
			}
		}
		if answered {
			if len(stalled) != 3 {
				t.Errorf("after the peer answered: %d stalled lines, want the 3 expiries'", len(stalled))
			}
			continue
		}
		if len(stalled) != 4 || !stalled[3].TimerRestarted || stalled[2].TimerRestarted {
			t.Fatalf("%d stalled lines, want 3 expiries and the restart", len(stalled))
		}
		r := stalled[3]
		if end, want := r.Mono+r.GiveUpIn, held.Mono+held.RTO; end != want {
			t.Errorf("restart projected the end at %v, want %v (the held send + the doubled RTO)", end, want)
		}
		if step := r.Timeline[len(r.Timeline)-1]; !step.Resent || step.Retransmits != 3 {
			t.Errorf("last step %+v, want the held retransmission #3, resent", step)
		}
		if r.Retransmits != 3 || r.FailedSends != 3 {
			t.Errorf("restart line: %d retransmissions, %d failed; want the 3 expiries, all failed", r.Retransmits, r.FailedSends)
		}
	}
}

// An outage found at start-up that then recovers counts the expiries the
// kernel had made before tcpwatch came, less the one answered.
func TestExistingOutageRecovers(t *testing.T) {
	var c collect
	tr := New(Config{}, c.emit)
	tr.AddExisting(at(10000), time.Unix(1_800_000_000, 0), &Existing{Cookie: 5, Local: cli, Remote: srv, Inode: 9,
		State: tcp.StateEstablished, CAState: tcp.CALoss, Retransmits: 3, Backoff: 3, RTO: at(1632), RTOMax: 120 * time.Second,
		Settings: tcp.Settings{Retries2: 15}})
	back := wire.Event{Mono: at(10500), Kind: wire.KindCongState, Cookie: 5, Local: cli, Remote: srv,
		State: tcp.StateEstablished, CAState: tcp.CAOpen, OldCA: tcp.CALoss}
	tr.Handle(&back)
	tr.Flush(at(11000))
	n := c.got[len(c.got)-1]
	if n.Verdict != Recovered || n.Retransmits != 2 {
		t.Errorf("%s after %d unanswered, want recovered after 2 (3 expiries, the last answered)", n.Verdict, n.Retransmits)
	}
}
