package tracker

import (
	"net/netip"
	"testing"
	"time"
)

// SYN-ACKs retransmitted to clients that never answer, the accept queue
// empty: one synack_unanswered per listener and episode, pointing at the
// network (the SYN queue had room), then at a SYN flood once the
// namespace sends SYN cookies.
func TestSynackUnansweredOncePerListener(t *testing.T) {
	var got []Narrative
	tr := New(Config{}, func(n *Narrative) { got = append(got, *n) })
	l := netip.MustParseAddrPort("10.0.0.1:8080")
	space := NetnsSynCounts{Syncookies: 1, Read: true}
	read := func(at time.Duration, syn SynackCounts, cookies uint64) {
		sp := space
		sp.CookiesSent = cookies
		tr.ListenerQueues(at, []ListenerQueue{{NetNS: 1, Local: l, Inode: 5, Queue: 0, Limit: 128, Synack: syn, Space: sp}})
		tr.Tick(at + 100*time.Millisecond)
	}
	s := time.Second
	read(1*s, SynackCounts{}, 0)
	read(2*s, SynackCounts{Retransmits: 3, Clients: 3, SynQueue: 3}, 0)
	read(3*s, SynackCounts{Retransmits: 9, Clients: 4, SynQueue: 4}, 0)
	if len(got) != 1 {
		t.Fatalf("want one narrative, got %d: %+v", len(got), got)
	}
	n := got[0]
	if n.Verdict != SynackUnanswered || n.Cause != HandshakesUnanswered || n.SynackRetransmits != 3 || n.SynackClients != 3 ||
		!n.Begins || n.Outage != s || n.CookiesSent != 0 || n.Syncookies != 1 || !n.CookiesKnown {
		t.Fatalf("first: %+v", n)
	}
	read(12*s, SynackCounts{Retransmits: 30, Clients: 9, SynQueue: 128}, 40)
	if len(got) != 2 {
		t.Fatalf("10 s later: %d narratives", len(got))
	}
	n = got[1]
	if n.Cause != SynFlood || n.SynackRetransmits != 30 || n.SynackClients != 9 || n.CookiesSent != 40 || n.Begins {
		t.Fatalf("10 s later: %+v", n)
	}
	// Quiet readings end the episode. One client that never answers now
	// and then (a lost SYN-ACK, a scanner) begins none; three within
	// readings close together begin another, from the first one's.
	for i := 13; i < 17; i++ {
		read(time.Duration(i)*s, SynackCounts{Retransmits: 30, Clients: 9}, 40)
	}
	c := uint64(9)
	for i := 17; i < 44; i++ { // a client at 20, 24, … 40: never three within the quiet limit
		if i%4 == 0 {
			c++
		}
		read(time.Duration(i)*s, SynackCounts{Retransmits: 20 + c, Clients: c}, 40)
	}
	if len(got) != 2 {
		t.Fatalf("a client every 4 s began an episode: %+v", got[len(got)-1])
	}
	read(44*s, SynackCounts{Retransmits: 40, Clients: c + 1}, 40)
	read(45*s, SynackCounts{Retransmits: 42, Clients: c + 3}, 40)
	if len(got) != 3 || !got[2].Begins || got[2].SynackClients != 3 || got[2].Outage != 2*s {
		t.Fatalf("three clients in two readings: %+v", got[len(got)-1])
	}
}

// Clients turned away while some readings find room in the queue: the
// application accepts, the backlog does not hold its bursts.
func TestAcceptQueueOverflowBacklogTooSmall(t *testing.T) {
	var got []Narrative
	tr := New(Config{}, func(n *Narrative) { got = append(got, *n) })
	l := netip.MustParseAddrPort("10.0.0.1:80")
	read := func(at time.Duration, queue, drops uint32, overflows uint64) {
		tr.ListenerQueues(at, []ListenerQueue{{NetNS: 1, Local: l, Inode: 5, Queue: queue, Limit: 8, Drops: drops,
			Space: NetnsSynCounts{ListenOverflows: overflows, Read: true}}})
		tr.Tick(at + 100*time.Millisecond)
	}
	s := time.Second
	read(1*s, 0, 0, 0)
	read(2*s, 9, 5, 5)
	if len(got) != 1 || got[0].Verdict != AcceptQueueOverflow || got[0].Cause != NotAccepting {
		t.Fatalf("full: %+v", got)
	}
	// Drops grew, the namespace counted overflows, but the queue has room
	// now: another cause, told at once.
	read(3*s, 2, 12, 12)
	if len(got) != 2 || got[1].Cause != BacklogTooSmall || got[1].TurnedAway != 12 {
		t.Fatalf("bursts: %+v", got[len(got)-1])
	}
	read(4*s, 9, 15, 15) // full again: the cause stays
	read(14*s, 1, 20, 20)
	if len(got) != 3 || got[2].Cause != BacklogTooSmall || got[2].TurnedAway != 20 {
		t.Fatalf("10 s later: %+v", got[len(got)-1])
	}
	// Drops without ListenOverflows and with room are not the queue's.
	tr2 := New(Config{}, func(n *Narrative) { t.Errorf("told %+v", n) })
	tr2.ListenerQueues(s, []ListenerQueue{{NetNS: 1, Local: l, Inode: 5, Queue: 0, Limit: 8, Drops: 0, Space: NetnsSynCounts{Read: true}}})
	tr2.ListenerQueues(2*s, []ListenerQueue{{NetNS: 1, Local: l, Inode: 5, Queue: 0, Limit: 8, Drops: 4, Space: NetnsSynCounts{Read: true}}})
	tr2.Tick(3 * s)
}

// Two listeners on one port ([::] with IPV6_V6ONLY beside 0.0.0.0): each
// has its own queue, and the one that overflows is told, once.
func TestTwoListenersOnOnePort(t *testing.T) {
	var got []Narrative
	tr := New(Config{}, func(n *Narrative) { got = append(got, *n) })
	v4, v6 := netip.MustParseAddrPort("0.0.0.0:80"), netip.MustParseAddrPort("[::]:80")
	read := func(at time.Duration, drops uint32) {
		tr.ListenerQueues(at, []ListenerQueue{
			{NetNS: 1, Local: v4, Inode: 5, Queue: 0, Limit: 4},
			{NetNS: 1, Local: v6, Inode: 6, Queue: 5, Limit: 4, Drops: drops},
		})
		tr.Tick(at + 100*time.Millisecond)
	}
	read(time.Second, 0)
	read(2*time.Second, 7)
	read(3*time.Second, 9)
	if len(got) != 1 || got[0].Local != v6 || got[0].TurnedAway != 7 || got[0].Inode != 6 {
		t.Fatalf("%+v", got)
	}
}
