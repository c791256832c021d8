package incident

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

var (
	wall0  = time.Date(2026, 12, 4, 3, 12, 0, 0, time.UTC)
	client = netip.MustParseAddr("10.0.0.1")
	peerA  = netip.MustParseAddrPort("10.0.0.5:5432")
	peerB  = netip.MustParseAddrPort("10.0.0.6:6379")
)

// conn is a connection of the simulated outage: it tells what the tracker
// would, one narrative per retransmission.
type conn struct {
	local, remote netip.AddrPort
	pid           uint32
	rtos          []time.Duration
	onset         time.Duration
}

func at(d time.Duration) time.Time { return wall0.Add(d) }

func (c *conn) narrative(v tracker.Verdict, mono time.Duration, final bool) *tracker.Narrative {
	n := &tracker.Narrative{Time: at(mono), Mono: mono, Verdict: v, Final: final, NetNS: 7, Local: c.local,
		Remote: c.remote, Owner: tracker.Owner{PID: c.pid, Comm: "python3"}, Retransmits: len(c.rtos),
		RTOs: append([]time.Duration(nil), c.rtos...), RTOMax: 120 * time.Second, Outage: mono - c.onset}
	if v == tracker.Stalled {
		n.Begins = len(c.rtos) == 1
		n.GiveUpIn = c.onset + 924600*time.Millisecond - mono
	}
	if v == tracker.RetransmitTimeout {
		n.Errno = int32(unix.ETIMEDOUT)
	}
	return n
}

type recorder struct {
	reports []Incident
}

func (r *recorder) report(inc *Incident) { r.reports = append(r.reports, *inc) }

// outage runs n connections to peer through a silence of length silence
// starting at start (each connection wrote at start + i*spread), ending
// with end (Recovered or RetransmitTimeout) at the end of the silence; it
// returns the tags of every narrative.
func outage(t *testing.T, m *Model, peer netip.AddrPort, n int, start, spread, silence time.Duration, end tracker.Verdict, pid uint32) map[News]int {
	t.Helper()
	type ev struct {
		at   time.Duration
		c    *conn
		last bool
	}
	conns := make([]*conn, n)
	var evs []ev
	for i := range conns {
		c := &conn{local: netip.AddrPortFrom(client, uint16(30000+i)), remote: peer, pid: pid}
		c.onset = start + time.Duration(i)*spread
		conns[i] = c
		rto := 200 * time.Millisecond
		for at := c.onset + rto; at < c.onset+silence; at += rto {
			evs = append(evs, ev{at: at, c: c})
			rto = min(2*rto, 120*time.Second)
		}
		evs = append(evs, ev{at: c.onset + silence, c: c, last: true})
	}
	slices.SortStableFunc(evs, func(a, b ev) int { return cmp.Compare(a.at, b.at) })
	news := map[News]int{}
	for _, e := range evs {
		var nar *tracker.Narrative
		if e.last {
			nar = e.c.narrative(end, e.at, end != tracker.Recovered)
		} else {
			rto := 200 * time.Millisecond << len(e.c.rtos)
			e.c.rtos = append(e.c.rtos, min(rto, 120*time.Second))
			nar = e.c.narrative(tracker.Stalled, e.at, false)
		}
		tag := m.Observe(nar, "")
		news[tag.News]++
	}
	return news
}

func TestTwoThousandConnectionsOneIncident(t *testing.T) {
	for _, tc := range []struct {
		end     tracker.Verdict
		outcome Outcome
	}{{tracker.Recovered, Recovered}, {tracker.RetransmitTimeout, Fatal}} {
		t.Run(string(tc.outcome), func(t *testing.T) {
			var rec recorder
			m := New(Config{ID: "t"}, rec.report)
			news := outage(t, m, peerA, 2000, time.Second, 50*time.Microsecond, 25*time.Second, tc.end, 1622)
			m.Tick(60 * time.Second)
			// One First and one End per connection; the rest repeats
			// (in an incident, the RTO class is the incident's).
			if news[First] != 2000 || news[End] != 2000 || news[RTOClass] != 0 || news[GiveUpMoved] != 0 {
				t.Errorf("news %v: want 2000 first, 2000 end, nothing else", news)
			}
			var phases []Phase
			for _, r := range rec.reports {
				phases = append(phases, r.Phase)
			}
			if len(rec.reports) < 2 || rec.reports[0].Phase != Open || rec.reports[len(rec.reports)-1].Phase != Close {
				t.Fatalf("phases %v: want open ... close", phases)
			}
			open, closing := rec.reports[0], rec.reports[len(rec.reports)-1]
			if open.Connections != 2000 || open.InTrouble != 2000 || open.Port != 5432 || open.Peer != peerA.Addr() {
				t.Errorf("open: %d connections (%d in trouble) to %s port %d; want all 2000 gathered to %s", open.Connections, open.InTrouble, open.Peer, open.Port, peerA)
			}
			if !open.Onset.Equal(at(time.Second)) {
				t.Errorf("onset %v, want %v", open.Onset, at(time.Second))
			}
			if len(open.Owners) != 1 || open.Owners[0].PID != 1622 || open.Owners[0].Connections != 2000 {
				t.Errorf("owners %+v", open.Owners)
			}
			if open.GiveUpFirst.IsZero() || open.GiveUpLast.Before(open.GiveUpFirst) {
				t.Errorf("give-up span %v..%v", open.GiveUpFirst, open.GiveUpLast)
			}
			if closing.Outcome != tc.outcome || closing.Connections != 2000 || closing.InTrouble != 0 {
				t.Errorf("close: outcome %s, %d connections, %d in trouble", closing.Outcome, closing.Connections, closing.InTrouble)
			}
			if got := closing.Verdicts[tc.end]; got != 2000 {
				t.Errorf("close verdicts %v", closing.Verdicts)
			}
			if tc.end == tracker.RetransmitTimeout && closing.Errnos[int32(unix.ETIMEDOUT)] != 2000 {
				t.Errorf("errnos %v", closing.Errnos)
			}
			// 6 retransmissions each within 25 s (RTOs 0.2 .. 6.4 s, the
			// seventh would go at 25.4 s).
			if closing.Retransmits != 2000*6 {
				t.Errorf("retransmits %d, want %d", closing.Retransmits, 2000*6)
			}
			if closing.Outage < 25*time.Second || closing.Outage > 26*time.Second {
				t.Errorf("outage %v", closing.Outage)
			}
			if len(rec.reports) > 5 {
				t.Errorf("%d records (%v) for one 25 s outage", len(rec.reports), phases)
			}
			// Each verdict is explained once in the incident.
			explained := map[tracker.Verdict]int{}
			for _, r := range rec.reports {
				for _, ex := range r.Examples {
					explained[ex.Verdict]++
				}
			}
			if explained[tracker.Stalled] != 1 || explained[tc.end] != 1 {
				t.Errorf("examples %v: want one stalled and one %s", explained, tc.end)
			}
			if s := m.Stats(); s.Incidents[tc.outcome] != 1 || s.Open != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestLoneConnectionIsToldAsToday(t *testing.T) {
	var rec recorder
	m := New(Config{ID: "t"}, rec.report)
	news := outage(t, m, peerA, 1, time.Second, 0, 500*time.Second, tracker.RetransmitTimeout, 1)
	m.Tick(600 * time.Second)
	if len(rec.reports) != 0 {
		t.Errorf("a lone connection made incident records: %+v", rec.reports)
	}
	// RTOs 0.2 .. 102.4 s then 120: classes <1 s, <10 s, <120 s, 120 s.
	if news[First] != 1 || news[RTOClass] != 3 || news[End] != 1 {
		t.Errorf("news %v: want first, three new RTO classes, the end", news)
	}
}

func TestTwoPeersTwoIncidents(t *testing.T) {
	var rec recorder
	m := New(Config{ID: "t"}, rec.report)
	outage(t, m, peerA, 30, time.Second, time.Millisecond, 20*time.Second, tracker.Recovered, 10)
	outage(t, m, peerB, 20, 40*time.Second, time.Millisecond, 20*time.Second, tracker.RetransmitTimeout, 11)
	m.Tick(100 * time.Second)
	closes := map[netip.Addr]Incident{}
	ids := map[string]bool{}
	for _, r := range rec.reports {
		ids[r.ID] = true
		if r.Phase == Close {
			closes[r.Peer] = r
		}
	}
	if len(ids) != 2 || len(closes) != 2 {
		t.Fatalf("%d ids, closes %v", len(ids), closes)
	}
	if a, b := closes[peerA.Addr()], closes[peerB.Addr()]; a.Connections != 30 || a.Outcome != Recovered ||
		b.Connections != 20 || b.Outcome != Fatal {
		t.Errorf("A: %d %s, B: %d %s", a.Connections, a.Outcome, b.Connections, b.Outcome)
	}
}

func TestUpdatesOnlyOnChangeAndAtMostEveryTenSeconds(t *testing.T) {
	var rec recorder
	m := New(Config{ID: "t"}, rec.report)
	// One connection joins every second for 60 s (a pool reconnecting),
	// each stalled until 100 s.
	var conns []*conn
	for i := 0; i < 60; i++ {
		mono := time.Duration(i+1) * time.Second
		c := &conn{local: netip.AddrPortFrom(client, uint16(40000+i)), remote: peerA, pid: 5, onset: mono}
		c.rtos = []time.Duration{200 * time.Millisecond}
		conns = append(conns, c)
		m.Observe(c.narrative(tracker.Stalled, mono, false), "")
	}
	// Then nothing joins: no update may follow for 30 s.
	for s := 61; s <= 90; s++ {
		m.Tick(time.Duration(s) * time.Second)
	}
	var last time.Time
	updates := 0
	for _, r := range rec.reports {
		if !last.IsZero() && r.Time.Sub(last) < 10*time.Second {
			t.Errorf("%s at %v, %v after the last", r.Phase, r.Time, r.Time.Sub(last))
		}
		if r.Phase == Update {
			updates++
			if r.Changes&MoreConnections == 0 {
				t.Errorf("update without a change: %v", r.Changes.Names())
			}
			if r.Time.After(at(71 * time.Second)) {
				t.Errorf("update at %v, after the last change", r.Time)
			}
		}
		last = r.Time
	}
	if updates < 4 || updates > 6 {
		t.Errorf("%d updates over 60 s of joins", updates)
	}
	// A second owner is a change of class too, and the end tells each.
	c := &conn{local: netip.AddrPortFrom(client, 50000), remote: peerA, pid: 6, onset: 95 * time.Second, rtos: []time.Duration{time.Second}}
	m.Observe(c.narrative(tracker.Stalled, 95*time.Second, false), "")
	m.Tick(101 * time.Second)
	if r := rec.reports[len(rec.reports)-1]; r.Phase != Update || r.Changes&NewOwner == 0 || len(r.Owners) != 2 {
		t.Errorf("after a new owner: %s %v owners %+v", r.Phase, r.Changes.Names(), r.Owners)
	}
	m.Flush(102 * time.Second)
	if r := rec.reports[len(rec.reports)-1]; r.Phase != Close || r.Outcome != Unfinished || r.InTrouble != 61 {
		t.Errorf("at exit: %s %s %d in trouble", r.Phase, r.Outcome, r.InTrouble)
	}
}

func TestMixedOutcomeAndRecoveredThenStalledAgain(t *testing.T) {
	var rec recorder
	m := New(Config{ID: "t"}, rec.report)
	a := &conn{local: netip.AddrPortFrom(client, 1), remote: peerA, pid: 1, onset: time.Second, rtos: []time.Duration{time.Second}}
	b := &conn{local: netip.AddrPortFrom(client, 2), remote: netip.AddrPortFrom(peerA.Addr(), 80), pid: 1, onset: time.Second, rtos: []time.Duration{time.Second}}
	m.Observe(a.narrative(tracker.Stalled, 2*time.Second, false), "")
	m.Observe(b.narrative(tracker.Stalled, 2*time.Second, false), "")
	tag := m.Observe(a.narrative(tracker.Recovered, 3*time.Second, false), "")
	if tag.News != End || tag.Incident == "" {
		t.Errorf("recovery tag %+v", tag)
	}
	// a stalls again within the incident: a first narrative again.
	a.rtos = []time.Duration{time.Second}
	if tag := m.Observe(a.narrative(tracker.Stalled, 4*time.Second, false), ""); tag.News != First {
		t.Errorf("second episode: %+v", tag)
	}
	m.Observe(a.narrative(tracker.Recovered, 5*time.Second, false), "")
	m.Observe(b.narrative(tracker.RetransmitTimeout, 6*time.Second, true), "")
	m.Tick(20 * time.Second)
	r := rec.reports[len(rec.reports)-1]
	if r.Phase != Close || r.Outcome != Mixed || r.Port != 0 || r.Connections != 2 || r.Recovered != 1 || r.Failed != 1 {
		t.Errorf("close %+v", r)
	}
	if !r.Ended.Equal(at(6 * time.Second)) {
		t.Errorf("ended %v", r.Ended)
	}
}

func TestGiveUpMovedIsNews(t *testing.T) {
	m := New(Config{ID: "t"}, func(*Incident) {})
	c := &conn{local: netip.AddrPortFrom(client, 1), remote: peerA, pid: 1, onset: time.Second, rtos: []time.Duration{500 * time.Millisecond}}
	n := c.narrative(tracker.Stalled, 2*time.Second, false)
	m.Observe(n, "")
	c.rtos = append(c.rtos, 2*time.Second)
	n = c.narrative(tracker.Stalled, 4*time.Second, false)
	if tag := m.Observe(n, ""); tag.News != RTOClass {
		t.Errorf("RTO 2 s after 0.5 s: %+v", tag)
	}
	c.rtos = append(c.rtos, 4*time.Second)
	n = c.narrative(tracker.Stalled, 8*time.Second, false)
	if tag := m.Observe(n, ""); tag.News != Repeat {
		t.Errorf("same class, same give-up: %+v", tag)
	}
	c.rtos = append(c.rtos, 4*time.Second)
	n = c.narrative(tracker.Stalled, 12*time.Second, false)
	n.GiveUpIn = 30 * time.Second // a TCP_USER_TIMEOUT set meanwhile
	if tag := m.Observe(n, ""); tag.News != GiveUpMoved {
		t.Errorf("give-up moved by minutes: %+v", tag)
	}
}

// Connections that are told once, at their end (connect_timeout,
// connect_refused), still make one incident together.
func TestFinalsAloneMakeAnIncident(t *testing.T) {
	var rec recorder
	m := New(Config{ID: "t"}, rec.report)
	for i := 0; i < 5; i++ {
		c := &conn{local: netip.AddrPortFrom(client, uint16(100+i)), remote: peerA, pid: 3, onset: time.Second}
		n := c.narrative(tracker.ConnectTimeout, 8*time.Second+time.Duration(i)*time.Millisecond, true)
		n.Errno = int32(unix.ETIMEDOUT)
		if tag := m.Observe(n, ""); (i == 0) != (tag.Incident == "") || tag.News != End {
			t.Errorf("connection %d: %+v", i, tag)
		}
	}
	m.Tick(20 * time.Second)
	if len(rec.reports) != 2 {
		t.Fatalf("%d records, want open and close", len(rec.reports))
	}
	if r := rec.reports[1]; r.Outcome != Fatal || r.Connections != 5 || r.Verdicts[tracker.ConnectTimeout] != 5 || r.Errnos[int32(unix.ETIMEDOUT)] != 5 {
		t.Errorf("close %+v", r)
	}
}

// The shared fate counts the peer's idle connections that are not in the
// incident, and when those with keepalive would notice.
func TestSharedFateOf(t *testing.T) {
	now := wall0
	inc := &Incident{NetNS: 7, Peer: peerA.Addr(), Port: peerA.Port()}
	ka := tcp.Settings{KeepaliveProbes: 9, KeepaliveIntvl: 75 * time.Second}
	sock := func(cookie uint64, remote netip.AddrPort, pid uint32, keepalive bool, expires time.Duration) sockdiag.Socket {
		return sockdiag.Socket{Cookie: cookie, NetNS: 7, Local: netip.AddrPortFrom(client, uint16(cookie)), Remote: remote,
			State: tcp.StateEstablished, PID: pid, Comm: "app", KeepaliveOn: keepalive, TimerExpires: expires, Settings: ka}
	}
	socks := []sockdiag.Socket{
		sock(1, peerA, 10, true, time.Hour),                         // idle, keepalive in an hour
		sock(2, peerA, 10, true, time.Minute),                       // idle, keepalive in a minute
		sock(3, peerA, 11, false, 0),                                // idle, no keepalive
		sock(4, peerA, 10, false, 0),                                // in the incident
		sock(5, peerB, 10, false, 0),                                // another peer
		sock(6, netip.AddrPortFrom(peerA.Addr(), 80), 10, false, 0), // another port
	}
	busy := sock(7, peerA, 10, false, 0)
	busy.Unacked = 1 // data in flight: it will notice
	socks = append(socks, busy)
	follows := func(_ uint32, cookie uint64) bool { return cookie == 4 }
	sf := sharedFateOf(inc, socks, nil, follows, now)
	if sf.Idle != 3 || sf.Keepalive != 2 || sf.Never != 1 || len(sf.Owners) != 2 || sf.Owners[0].PID != 10 || sf.Owners[0].Connections != 2 {
		t.Errorf("%+v", sf)
	}
	if want := now.Add(time.Minute + 9*75*time.Second); !sf.NoticeFirst.Equal(want) {
		t.Errorf("notice first %v, want %v", sf.NoticeFirst, want)
	}
	if want := now.Add(time.Hour + 9*75*time.Second); !sf.NoticeLast.Equal(want) {
		t.Errorf("notice last %v, want %v", sf.NoticeLast, want)
	}
	// Socket 2 is Go's (15 s, 9 probes on the socket, read by the
	// iterator): it gives up 9 × 15 s after its first probe, not 9 × 75 s.
	own := map[uint64]SocketKeepalive{2: {Intvl: 15 * time.Second, Probes: 9}}
	sf = sharedFateOf(inc, socks, own, follows, now)
	if want := now.Add(time.Minute + 9*15*time.Second); !sf.NoticeFirst.Equal(want) || sf.Source != SharedFateSourceOwn {
		t.Errorf("with the socket's own: notice first %v (%s), want %v", sf.NoticeFirst, sf.Source, want)
	}
}

// A zero-window episode is trouble that the peer answers: in an incident
// until it recovers. A listener's overflow has no peer: never grouped.
func TestOtherEpisodes(t *testing.T) {
	var rec recorder
	m := New(Config{ID: "t"}, rec.report)
	for i := 0; i < 2; i++ {
		c := &conn{local: netip.AddrPortFrom(client, uint16(100+i)), remote: peerA, pid: 3, onset: time.Second}
		n := c.narrative(tracker.ZeroWindow, 2*time.Second, false)
		if tag := m.Observe(n, ""); tag.News != First {
			t.Errorf("zero_window %d: %+v", i, tag)
		}
	}
	m.Tick(5 * time.Second)
	if len(rec.reports) != 1 || rec.reports[0].InTrouble != 2 {
		t.Fatalf("reports %+v", rec.reports)
	}
	for i := 0; i < 2; i++ {
		c := &conn{local: netip.AddrPortFrom(client, uint16(100+i)), remote: peerA, pid: 3, onset: time.Second}
		m.Observe(c.narrative(tracker.Recovered, 6*time.Second, false), "")
	}
	lst := netip.MustParseAddrPort("10.0.0.1:80")
	for i := 0; i < 3; i++ {
		n := &tracker.Narrative{Time: at(7 * time.Second), Mono: 7 * time.Second, Verdict: tracker.AcceptQueueOverflow, NetNS: 7,
			Local: lst, Remote: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), Begins: i == 0}
		if tag := m.Observe(n, ""); tag.Incident != "" || tag.News == Repeat {
			t.Errorf("overflow %d: %+v", i, tag)
		}
	}
	m.Tick(20 * time.Second)
	if last := rec.reports[len(rec.reports)-1]; last.Phase != Close || last.Outcome != Recovered || m.Open() != 0 {
		t.Errorf("last %+v, %d open", last, m.Open())
	}
}

// A listener's narratives are one incident per listener and episode: the
// same id while the episode lasts, never folded as a member, news only
// when what it counts grew; a new episode has a new id.
func TestListenerIncidentKeyedPerListener(t *testing.T) {
	m := New(Config{ID: "t"}, func(*Incident) {})
	l := netip.MustParseAddrPort("10.0.0.1:80")
	n := func(at time.Duration, begins bool, turned int) *tracker.Narrative {
		return &tracker.Narrative{Verdict: tracker.AcceptQueueOverflow, Mono: at, Local: l, State: tcp.StateListen, NetNS: 1,
			Remote: netip.MustParseAddrPort("0.0.0.0:0"), Begins: begins,
			ListenerFacts: tracker.ListenerFacts{TurnedAway: turned, Cause: tracker.NotAccepting}}
	}
	first := m.Observe(n(time.Second, true, 5), "")
	if first.Incident == "" || !first.Listener || first.Member() || first.News != First {
		t.Fatalf("first: %+v", first)
	}
	same := m.Observe(n(11*time.Second, false, 5), "")
	grew := m.Observe(n(21*time.Second, false, 9), "")
	if same.Incident != first.Incident || same.News != Repeat || grew.Incident != first.Incident || grew.News != ListenerMoved {
		t.Fatalf("same episode: %+v, %+v", same, grew)
	}
	other := m.Observe(&tracker.Narrative{Verdict: tracker.SynackUnanswered, Mono: 22 * time.Second, State: tcp.StateListen, NetNS: 1,
		Local: netip.MustParseAddrPort("10.0.0.1:443"), Remote: netip.MustParseAddrPort("0.0.0.0:0"), Begins: true}, "")
	again := m.Observe(n(40*time.Second, true, 1), "")
	if other.Incident == first.Incident || again.Incident == first.Incident || again.News != First {
		t.Fatalf("another listener %+v, a new episode %+v", other, again)
	}
	if m.Open() != 0 {
		t.Errorf("listeners counted as peer incidents: %d", m.Open())
	}
}

// The reading loop waits for a namespace's first socket table only: later
// readings happen on the reader's own goroutine while the loop goes on
// with the table it has, one reading at a time per namespace, and a
// table's keepalive deadlines count from when it was read.
func TestSharedFateReaderReadsOffTheLoop(t *testing.T) {
	inc := &Incident{NetNS: 7, Peer: peerA.Addr(), Port: peerA.Port()}
	idle := func(cookie uint64) sockdiag.Socket {
		return sockdiag.Socket{Cookie: cookie, NetNS: 7, Local: netip.AddrPortFrom(client, uint16(cookie)), Remote: peerA,
			State: tcp.StateEstablished, PID: 10, Comm: "app", KeepaliveOn: true, TimerExpires: time.Minute,
			Settings: tcp.Settings{KeepaliveProbes: 9, KeepaliveIntvl: 75 * time.Second}}
	}
	var (
		mu      sync.Mutex
		reads   int
		release = make(chan struct{})
		started = make(chan struct{}, 8)
	)
	r := &SharedFateReader{snapshot: func(ns uint32) ([]sockdiag.Socket, error) {
		mu.Lock()
		reads++
		n := reads
		mu.Unlock()
		if n == 1 {
			return []sockdiag.Socket{idle(1)}, nil
		}
		started <- struct{}{}
		<-release // a slow reading: the loop must not wait for it
		return []sockdiag.Socket{idle(1), idle(2)}, nil
	}}
	follows := func(uint32, uint64) bool { return false }

	before := time.Now()
	r.Read(inc, follows)
	if inc.SharedFate == nil || inc.SharedFate.Idle != 1 {
		t.Fatalf("first reading: %+v", inc.SharedFate)
	}
	if nf := inc.SharedFate.NoticeFirst; nf.Before(before.Add(time.Minute+9*75*time.Second)) || nf.After(time.Now().Add(time.Minute+9*75*time.Second)) {
		t.Errorf("notice first %v is not counted from the reading", nf)
	}

	// The table is over a second old but not stale: the next Read starts
	// a reading and answers from the old table at once, however long the
	// reading takes.
	r.mu.Lock()
	tb := r.tables[7]
	tb.at = tb.at.Add(-(sharedFateReuse + sharedFateStale) / 2)
	r.tables[7] = tb
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		for range 3 {
			r.Read(inc, follows)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Read waited for a reading off the loop")
	}
	if inc.SharedFate.Idle != 1 {
		t.Errorf("while the next table is read: %d idle, want the old table's 1", inc.SharedFate.Idle)
	}
	if !inc.SharedFate.NoticeFirst.Equal(tb.at.Add(time.Minute + 9*75*time.Second)) {
		t.Errorf("notice first %v, want it counted from the old table's reading %v", inc.SharedFate.NoticeFirst, tb.at)
	}
	<-started
	close(release)
	// The new table replaces the old once read.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.Read(inc, follows)
		if inc.SharedFate.Idle == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the table read off the loop never replaced the old one: %d idle", inc.SharedFate.Idle)
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	if reads != 2 {
		t.Errorf("%d readings, want 2: one at the first incident, one when the table was old (not one per Read)", reads)
	}
	mu.Unlock()
	// A stale table (no incident there for a while) is never told: the
	// record waits for the next reading, on the caller's goroutine.
	r.mu.Lock()
	tb = r.tables[7]
	tb.at = tb.at.Add(-time.Hour)
	tb.socks = nil
	r.tables[7] = tb
	r.mu.Unlock()
	r.Read(inc, follows)
	if inc.SharedFate.Idle != 2 {
		t.Errorf("after an hour: %d idle, want the fresh reading's 2, not the stale table's 0", inc.SharedFate.Idle)
	}
}
