package tracker

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Narratives told with ReuseNarratives are the ones told without it, in
// every recorded scenario (with --all: every end a narrative), and the
// tracker does reuse them: a narrative kept beyond emit (here, on purpose)
// is seen again with another story.
func TestReuseNarrativesTellsTheSame(t *testing.T) {
	files, err := filepath.Glob("testdata/*.hex")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recordings: %v", err)
	}
	reused := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".hex")
		rec := loadRecording(t, name)
		tell := func(reuse bool) ([]Narrative, map[*Narrative]int) {
			var told []Narrative
			seen := map[*Narrative]int{}
			tr := New(Config{All: true, ReuseNarratives: reuse, ResetReasons: testReasons, CloseWaitAfter: rec.closeWaitAfter,
				DropsSeen: true, DropReasons: testDropReasons}, func(n *Narrative) {
				cp := *n
				cp.Timeline = slices.Clone(n.Timeline)
				told = append(told, cp)
				seen[n]++
			})
			var last time.Duration
			for i := range rec.events {
				tr.Handle(&rec.events[i])
				last = rec.events[i].Mono
			}
			tr.Flush(last + time.Second)
			return told, seen
		}
		fresh, _ := tell(false)
		again, seen := tell(true)
		if !reflect.DeepEqual(fresh, again) {
			for i := range min(len(fresh), len(again)) {
				if !reflect.DeepEqual(fresh[i], again[i]) {
					t.Fatalf("%s: narrative %d differs with reuse:\n%+v\nwithout:\n%+v", name, i, again[i], fresh[i])
				}
			}
			t.Fatalf("%s: %d narratives with reuse, %d without", name, len(again), len(fresh))
		}
		for _, n := range seen {
			reused += n - 1
		}
	}
	if reused == 0 {
		t.Error("no narrative was reused")
	}
}

// A removed connection's entry is reused only once nothing reaches it:
// not while the closing queue still holds it, and never one a fold of
// connect() failures holds. The entry reused is a zero one.
func TestConnReusedOnlyWhenUnreachable(t *testing.T) {
	srv, cli := netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:40000")
	tr := New(Config{All: true}, func(*Narrative) {})
	at := func(ms int) time.Duration { return time.Hour + time.Duration(ms)*time.Millisecond }
	open := func(cookie uint64, ms int) *conn {
		ev := wire.Event{Mono: at(ms), Kind: wire.KindState, Cookie: cookie, Local: srv, Remote: cli,
			OldState: tcp.StateSynRecv, State: tcp.StateEstablished}
		tr.Handle(&ev)
		return tr.byCookie[cookie]
	}
	end := func(cookie uint64, ms int) {
		ev := wire.Event{Mono: at(ms), Kind: wire.KindState, Cookie: cookie, Local: srv, Remote: cli,
			OldState: tcp.StateEstablished, State: tcp.StateClose}
		tr.Handle(&ev) // queued for the grace period
		ev.Kind = wire.KindDestroy
		tr.Handle(&ev)
	}
	a := open(1, 0)
	a.probes = 3 // a figure the next life must not inherit
	end(1, 1)
	if a.prev != nil || a.queued != 1 {
		t.Fatalf("after its destroy: tracked %v, queued %d", a.prev != nil, a.queued)
	}
	if b := open(2, 2); b == a {
		t.Fatal("an entry still in the closing queue was reused")
	}
	tr.Tick(at(2000)) // its wait for the destroy (closeWait) is over: a leaves the queue
	c := open(3, 2001)
	if c != a {
		t.Fatal("an entry nothing reaches was not reused")
	}
	if c.probes != 0 || c.cookie != 3 || c.queued != 0 || c.free {
		t.Errorf("the reused entry kept its past: probes %d cookie %d queued %d free %v", c.probes, c.cookie, c.queued, c.free)
	}
	c.pinned = true // as a fold of connect() failures holds it
	end(3, 2002)
	tr.Tick(at(4000))
	if d := open(4, 4001); d == c {
		t.Error("a pinned entry was reused")
	}
}

// What is kept for reuse is let go when memory is handed back: a storm's
// last spare entries and narratives are the collector's again.
func TestReleaseReusableLetsGo(t *testing.T) {
	srv, cli := netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:40000")
	tr := New(Config{All: true, ReuseNarratives: true}, func(*Narrative) {})
	at := func(ms int) time.Duration { return time.Hour + time.Duration(ms)*time.Millisecond }
	state := func(cookie uint64, ms int, kind wire.Kind, old, now tcp.State) {
		ev := wire.Event{Mono: at(ms), Kind: kind, Cookie: cookie, Local: srv,
			Remote: netip.AddrPortFrom(cli.Addr(), 40000+uint16(cookie)), OldState: old, State: now}
		tr.Handle(&ev)
	}
	// A burst: 500 connections open at once, then all end, one in ten
	// reset by its peer (a narrative held whole, then kept for reuse),
	// the others normally (held compact, held.go).
	for cookie := uint64(1); cookie <= 500; cookie++ {
		state(cookie, 0, wire.KindState, tcp.StateSynRecv, tcp.StateEstablished)
	}
	for cookie := uint64(1); cookie <= 500; cookie++ {
		if cookie%10 == 0 {
			state(cookie, 1, wire.KindRecvReset, tcp.StateEstablished, tcp.StateEstablished)
		}
		state(cookie, 1, wire.KindState, tcp.StateEstablished, tcp.StateClose)
		state(cookie, 1, wire.KindDestroy, tcp.StateEstablished, tcp.StateClose)
	}
	tr.Tick(at(2000)) // their wait for the destroy is over: they leave the closing queue
	state(99, 2001, wire.KindState, tcp.StateSynRecv, tcp.StateEstablished)
	if len(tr.freeNarratives)-tr.freeHead == 0 || len(tr.freeConns) == 0 || len(tr.pending.ring) <= minHeld {
		t.Fatalf("nothing kept for reuse (%d narratives, %d entries, room for %d held): the test makes no burst",
			len(tr.freeNarratives)-tr.freeHead, len(tr.freeConns), len(tr.pending.ring))
	}
	tr.ReleaseReusable()
	if len(tr.freeNarratives) != 0 || len(tr.freeConns) != 0 || cap(tr.freeConns) != 0 || tr.pending.ring != nil {
		t.Errorf("still kept: %d narratives, %d entries (cap %d), room for %d held", len(tr.freeNarratives), len(tr.freeConns),
			cap(tr.freeConns), len(tr.pending.ring))
	}
}
