package tracker

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// timeWaitClose is the active closer's end: FIN_WAIT2 -> CLOSE, its 4-tuple
// now in TIME_WAIT; i numbers the 4-tuple (a peer and a port per i).
func timeWaitClose(tr *Tracker, i int, at time.Duration) {
	c := &conn{netns: 1, local: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 1}), 8080),
		remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 16), byte(i >> 8)}), uint16(1024+i&0xff))}
	tr.watchTimeWait(c, &wire.Event{Mono: at, Kind: wire.KindState, OldState: tcp.StateFinWait2, State: tcp.StateClose})
}

// Issue #21: the TIME_WAIT memory is bounded, refuses new 4-tuples while
// it is full of ones younger than TIME_WAIT, takes them again as the old
// ones expire, and still tells a reuse; and a reused (deleted) 4-tuple
// does not keep its queue entry forever.
func TestTimeWaitMemory(t *testing.T) {
	var notices []*Notice
	tr := New(Config{All: true, Notices: func(n *Notice) { notices = append(notices, n) }}, func(*Narrative) {})
	base := time.Hour
	for i := range maxTimeWaitKept + 1000 {
		timeWaitClose(tr, i, base+time.Duration(i)*time.Microsecond)
	}
	if tr.timeWait.Len() != maxTimeWaitKept {
		t.Fatalf("%d 4-tuples kept, want the bound %d", tr.timeWait.Len(), maxTimeWaitKept)
	}
	if tr.timeWait.Entries() != maxTimeWaitKept {
		t.Errorf("queue of %d, want %d (one per 4-tuple kept)", tr.timeWait.Entries(), maxTimeWaitKept)
	}
	// A minute later the first 1000 have left TIME_WAIT: room for 1000.
	later := base + timeWaitLen + 1000*time.Microsecond
	for i := range 2000 {
		timeWaitClose(tr, 1<<20+i, later+time.Duration(i)*time.Nanosecond)
	}
	if tr.timeWait.Len() != maxTimeWaitKept {
		t.Errorf("%d 4-tuples kept after the first expired, want %d", tr.timeWait.Len(), maxTimeWaitKept)
	}
	if !tr.timeWait.Has(twKeyOf(tupleKey{1, netip.MustParseAddrPort("10.0.0.1:8080"), netip.MustParseAddrPort("10.1.16.0:1024")})) {
		t.Error("the first 4-tuple closed after the expiry is not kept")
	}
	// A new connection on a kept 4-tuple is a reuse, told once.
	c := &conn{netns: 1, local: netip.MustParseAddrPort("10.0.0.1:8080"), remote: netip.MustParseAddrPort("10.1.16.0:1024")}
	tr.watchTimeWait(c, &wire.Event{Mono: later + time.Second, Kind: wire.KindState, OldState: tcp.StateSynSent, State: tcp.StateEstablished})
	if len(notices) != 1 || notices[0].Kind != "time_wait_reuse" || notices[0].Age != time.Second-0 {
		t.Errorf("notices %+v, want one time_wait_reuse 1 s old", notices)
	}
	// Reuses leave their queue entries behind; the queue stays within
	// twice the map's bound however many come.
	for i := range 3 * maxTimeWaitKept {
		at := later + 2*time.Second + time.Duration(i)*time.Microsecond
		timeWaitClose(tr, 1<<21+i, at)
		k := tupleKey{1, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 1}), 8080),
			netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte((1<<21 + i) >> 16), byte((1<<21 + i) >> 8)}), uint16(1024+(1<<21+i)&0xff))}
		tr.timeWait.Delete(twKeyOf(k)) // as a reuse does
	}
	if n := tr.timeWait.Entries(); n > 2*maxTimeWaitKept {
		t.Errorf("queue of %d after many reuses, want at most %d", n, 2*maxTimeWaitKept)
	}
}

// BenchmarkTimeWaitFull is a close while the TIME_WAIT memory is full of
// 4-tuples younger than a minute (a host churning to many peers): it used
// to scan the whole map each time.
func BenchmarkTimeWaitFull(b *testing.B) {
	tr := New(Config{All: true, Notices: func(*Notice) {}}, func(*Narrative) {})
	base := time.Hour
	for i := range maxTimeWaitKept {
		timeWaitClose(tr, i, base)
	}
	b.ResetTimer()
	for i := range b.N {
		timeWaitClose(tr, 1<<20+i, base+time.Millisecond)
	}
}

// The real kernel's records of article 004's old SYN (6.18, lab
// timewait-syn-old and timewait-rst-rfc1337): B's TIME_WAIT drops A's SYN,
// whose sequence number is 256 MiB behind, answers with the old ACK, and
// A's RST ends the TIME_WAIT (tcp_rfc1337=0) or is ignored (=1); a new
// connection on the 4-tuple after the RST took no TIME_WAIT over.
func TestTimeWaitOldSyn(t *testing.T) {
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"timewait-syn-old", []string{NoticeTimeWaitSynRejected, NoticeTimeWaitRstEnded}},
		{"timewait-rst-rfc1337", []string{NoticeTimeWaitSynRejected, NoticeTimeWaitRstIgnored, NoticeTimeWaitSynRejected}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := loadRecording(t, tc.name)
			var got, client []*Notice
			tr := New(Config{All: true, ResetReasons: testReasons, Notices: func(n *Notice) {
				if n.Kind == NoticeSynAnsweredOldAck {
					client = append(client, n)
				} else {
					got = append(got, n)
				}
			}}, func(*Narrative) {})
			for i := range rec.events {
				tr.Handle(&rec.events[i])
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d notices, want %v", len(got), tc.want)
			}
			for i, n := range got {
				f := n.TimeWait
				newer, ahead := f.SeqNewer()
				if n.Kind != tc.want[i] || n.Local.Port() != 8080 || n.Remote.Port() != 40000 || newer || f.TSNewer() {
					t.Errorf("notice %d: %s %v -> %v, seq newer %v", i, n.Kind, n.Local, n.Remote, newer)
				}
				// 256 MiB sent, the clock's ISN moved on by 15.6 MiB a second since.
				if n.Kind == NoticeTimeWaitSynRejected && (ahead > -200<<20 || ahead < -(256<<20)) {
					t.Errorf("SYN %d bytes ahead of tw_rcv_nxt, want about 256 MiB behind", ahead)
				}
				if n.Kind != NoticeTimeWaitSynRejected && f.Seq != f.RcvNxt {
					t.Errorf("RST seq %d, want the TIME_WAIT's rcv_nxt %d (A's reset acks the old ACK)", f.Seq, f.RcvNxt)
				}
				if f.RFC1337 != (tc.name == "timewait-rst-rfc1337") || f.HasTSval || f.PAWS {
					t.Errorf("notice %d: rfc1337 %v, timestamps %v/%v (A ran without)", i, f.RFC1337, f.HasTSval, f.PAWS)
				}
				if n.Age <= 0 || n.Age > time.Second || f.Left < 58*time.Second || f.Left > timeWaitLen {
					t.Errorf("notice %d: closed %v ago, %v left, want just closed, most of 60 s left", i, n.Age, f.Left)
				}
			}
			if got[0].TimeWait.Seen != wire.TimeWaitSynAnswered {
				t.Errorf("first SYN: %v, want answered with the old ACK", got[0].TimeWait.Seen)
			}
			// A's side: its SYN got the old ACK once (the next one's was
			// held back by tcp_invalid_ratelimit, or got through), and A reset it.
			if len(client) != 1 || client[0].Local.Port() != 40000 || client[0].Remote.Port() != 8080 ||
				client[0].ResetReason != "TCP_INVALID_ACK_SEQUENCE" || client[0].Owner.Comm != "lab-client" {
				for _, n := range client {
					t.Logf("A: %s %v -> %v reason %q owner %+v", n.Kind, n.Local, n.Remote, n.ResetReason, n.Owner)
				}
				t.Errorf("A told %d %s, want 1 by lab-client with its reset's reason", len(client), NoticeSynAnsweredOldAck)
			}
		})
	}
}

// noticesOf replays a recording's records (those keep says) and returns
// every notice, with the kernel's view of TIME_WAIT as timeWaitSeen says.
func noticesOf(t *testing.T, name string, timeWaitSeen bool, keep func(*wire.Event) bool) (notices []Notice, hostOf map[uint32]string) {
	t.Helper()
	rec := loadRecording(t, name)
	tr := New(Config{All: true, ResetReasons: testReasons, DropsSeen: true, DropReasons: testDropReasons, TimeWaitSeen: timeWaitSeen,
		Notices: func(n *Notice) { notices = append(notices, *n) }}, func(*Narrative) {})
	var last time.Duration
	for i := range rec.events {
		if keep(&rec.events[i]) {
			tr.Handle(&rec.events[i])
			last = rec.events[i].Mono
		}
	}
	tr.Flush(last + time.Second)
	return notices, rec.hostOf
}

// timewait-syn-old as a kernel before 6.11 shows it: kfree_skb names no
// timewait socket, so B's TIME_WAIT answering the old SYN and A's RST
// ending it leave no record (the 6.18 recording without them). A's reset
// of the old ACK is seen on every kernel; B's listener then takes A's
// next SYN. That is not a TIME_WAIT taking a newer SYN: the 6.1 guest told
// time_wait_syn_accepted ("its sequence number or timestamp was newer")
// for this SYN, whose sequence number was behind.
func TestOldSynSeenWithoutTimeWaitRecords(t *testing.T) {
	notices, hostOf := noticesOf(t, "timewait-syn-old", false, func(ev *wire.Event) bool { return ev.Kind != wire.KindTimeWait })
	var a, b []string
	for _, n := range notices {
		switch hostOf[n.NetNS] {
		case "A":
			a = append(a, n.Kind)
		case "B":
			b = append(b, n.Kind)
		}
	}
	if len(a) != 1 || a[0] != NoticeSynAnsweredOldAck {
		t.Errorf("A's notices %v, want its reset of the old ACK", a)
	}
	if len(b) != 0 {
		t.Errorf("B's notices %v, want none: its TIME_WAIT took no SYN over, A's RST ended it", b)
	}
	// The same records with the TIME_WAIT's own (6.11+): B tells what its
	// TIME_WAIT did, and still no takeover.
	notices, hostOf = noticesOf(t, "timewait-syn-old", true, func(*wire.Event) bool { return true })
	b = nil
	for _, n := range notices {
		if hostOf[n.NetNS] == "B" {
			b = append(b, n.Kind)
		}
	}
	if !slices.Equal(b, []string{NoticeTimeWaitSynRejected, NoticeTimeWaitRstEnded}) {
		t.Errorf("with rx_sk, B's notices %v", b)
	}
}

// A newer SYN taken over by the TIME_WAIT (timewait-syn): on a kernel
// that would show an RST ending the TIME_WAIT, time_wait_syn_accepted is
// what happened; on one before 6.11 it says it cannot tell the two apart.
func TestSynAcceptedSaysWhatTheKernelCannotShow(t *testing.T) {
	for _, seen := range []bool{true, false} {
		notices, _ := noticesOf(t, "timewait-syn", seen, func(*wire.Event) bool { return true })
		var accepted []Notice
		for _, n := range notices {
			if n.Kind == "time_wait_syn_accepted" {
				accepted = append(accepted, n)
			}
		}
		if len(accepted) != 1 || accepted[0].CauseUnseen == seen {
			t.Errorf("TIME_WAIT seen %v: %+v, want one time_wait_syn_accepted, cause unseen %v", seen, accepted, !seen)
		}
	}
}
