package tracker

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// A loss storm swallowed the ends of many connections: the kernel's socket
// table no longer has them, and reconciling with it empties the tracker.
// The one that was stalled is told as untold (lost records, final); the
// others go silently and are counted; the live ones and those the table
// may not have seen yet stay.
func TestReconcileDropsWhatTheKernelNoLongerHas(t *testing.T) {
	var c collect
	tr := New(Config{}, c.emit)
	tuple := func(i int) (netip.AddrPort, netip.AddrPort) {
		return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(10000+i)), srv
	}
	// 1000 established connections whose ends were lost.
	for i := 1; i <= 1000; i++ {
		l, r := tuple(i)
		ev := wire.Event{Mono: at(i), Kind: wire.KindState, Cookie: uint64(i), NetNS: 1, Local: l, Remote: r,
			OldState: tcp.StateSynSent, State: tcp.StateEstablished}
		tr.Handle(&ev)
	}
	// Cookie 5 stalled before its records were lost.
	l, r := tuple(5)
	stall := wire.Event{Mono: at(2000), Kind: wire.KindRetransmit, Cookie: 5, NetNS: 1, Local: l, Remote: r,
		State: tcp.StateEstablished, CAState: tcp.CALoss, Retransmits: 1, RTO: 200 * time.Millisecond,
		Settings: tcp.Settings{Retries2: 15}}
	tr.Handle(&stall)
	// A keepalive record with no cookie (the timer cannot read it): known by its 4-tuple only.
	ka := wire.Event{Mono: at(2001), Kind: wire.KindKeepalive, NetNS: 1, Local: netip.MustParseAddrPort("10.0.0.1:9999"),
		Remote: srv, State: tcp.StateEstablished, Flags: wire.FlagProbeSent, ProbesOut: 2}
	tr.Handle(&ka)
	tr.RecordsLost()
	tr.Tick(at(2100))
	told := len(c.got)

	// Cookie 7 is alive; 9999's tuple is alive; the rest are gone.
	alive := func(netns uint32, cookie uint64, local, remote netip.AddrPort) bool {
		return cookie == 7 || (cookie == 0 && local.Port() == 9999)
	}
	// Read at 1500 ms: the stalled one and the keepalive one have events
	// after it (the table may not show a socket made after it was read):
	// kept, like cookie 7, which is alive.
	dropped := tr.Reconcile(at(1500), at(3000), alive)
	if dropped != 998 {
		t.Errorf("dropped %d, want 998", dropped)
	}
	// Read later: the stalled one goes too. Its end, written while the
	// table was read but read only after it (a reader behind), starts no
	// second story.
	dropped += tr.Reconcile(at(2500), at(3000), alive)
	late := []wire.Event{
		{Mono: at(2600), Kind: wire.KindState, Cookie: 5, NetNS: 1, Local: l, Remote: r, OldState: tcp.StateEstablished,
			State: tcp.StateClose, SkErr: 110},
		{Mono: at(2601), Kind: wire.KindError, Cookie: 5, NetNS: 1, Local: l, Remote: r, State: tcp.StateClose, Detail: 110, SkErr: 110},
	}
	for i := range late {
		tr.Handle(&late[i])
	}
	tr.Tick(at(4000))
	s := tr.Stats()
	if s.Tracked != 2 || s.Reconciled != 999 || dropped != 999 {
		t.Errorf("tracked %d reconciled %d dropped %d; want 2 (cookie 7, port 9999), 999, 999", s.Tracked, s.Reconciled, dropped)
	}
	if len(c.got)-told != 1 || c.got[told].Verdict != Untold {
		t.Fatalf("after reconciling: %v, want one untold", verdictsOf(c.got[told:]))
	}
	n := c.got[told]
	if !n.Final || !n.LostRecords || n.Cookie != 5 || n.Retransmits != 1 || n.Errno != 0 || n.Outage <= 0 {
		t.Errorf("untold: final %v lost_records %v cookie %d retransmits %d errno %d outage %v",
			n.Final, n.LostRecords, n.Cookie, n.Retransmits, n.Errno, n.Outage)
	}
	// Its socket's last records, if they come late, tell nothing more.
	destroy := wire.Event{Mono: at(5000), Kind: wire.KindDestroy, Cookie: 5, NetNS: 1, Local: l, Remote: r, State: tcp.StateClose}
	tr.Handle(&destroy)
	tr.Flush(at(6000))
	for _, n := range c.got[told+1:] {
		if n.Cookie == 5 || n.Local == l {
			t.Errorf("told %s after untold", n.Verdict)
		}
	}
	oneStoryPerConnection(t, "reconcile", c.got)
}

// A stalled connection the socket table no longer has, while the kernel
// counted no lost record: untold, and not said to have lost records.
func TestUntoldWithoutLossesClaimsNone(t *testing.T) {
	var c collect
	tr := New(Config{}, c.emit)
	stall := wire.Event{Mono: at(100), Kind: wire.KindRetransmit, Cookie: 5, NetNS: 1, Local: cli, Remote: srv,
		State: tcp.StateEstablished, CAState: tcp.CALoss, Retransmits: 1, RTO: 200 * time.Millisecond,
		Settings: tcp.Settings{Retries2: 15}}
	tr.Handle(&stall)
	tr.Tick(at(200))
	tr.Reconcile(at(300), at(400), func(uint32, uint64, netip.AddrPort, netip.AddrPort) bool { return false })
	tr.Flush(at(500))
	last := c.got[len(c.got)-1]
	if last.Verdict != Untold || !last.Final || last.LostRecords {
		t.Fatalf("told %v, the last final %v lost_records %v; want untold, final, no lost records", verdictsOf(c.got), last.Final, last.LostRecords)
	}
}

// An oracle that cannot read a namespace answers true: nothing of it is
// dropped. A connection whose end is being told (closing, within the grace
// period) is left to finish.
func TestReconcileKeepsClosingConnections(t *testing.T) {
	var c collect
	tr := New(Config{All: true}, c.emit)
	evs := []wire.Event{
		{Mono: at(1), Kind: wire.KindState, Cookie: 1, NetNS: 1, Local: cli, Remote: srv, OldState: tcp.StateSynSent, State: tcp.StateEstablished},
		{Mono: at(2), Kind: wire.KindState, Cookie: 1, NetNS: 1, Local: cli, Remote: srv, OldState: tcp.StateEstablished, State: tcp.StateClose},
	}
	for i := range evs {
		tr.Handle(&evs[i])
	}
	if n := tr.Reconcile(at(10), at(10), func(uint32, uint64, netip.AddrPort, netip.AddrPort) bool { return false }); n != 0 {
		t.Errorf("dropped %d connections still being told", n)
	}
	tr.Flush(at(100))
	if len(c.got) != 1 || c.got[0].Verdict != LocalClosed {
		t.Errorf("told %v, want local_closed", verdictsOf(c.got))
	}
}
