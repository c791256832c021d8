package tracker

import (
	"cmp"
	"fmt"
	"math/rand/v2"
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

// A whole lifecycle told without an entry (whole.go) tells what the
// generic path tells: the same narratives (timelines included), notices,
// owner look-ups and counters, for the churn the engine's replay
// benchmark replays (its 4-tuples reopened within TIME_WAIT, as live), for
// every recorded scenario with its lifecycles summarised as the kernel
// half summarises them, and for random streams of lifecycles mixed with
// other records on a few 4-tuples and cookies, in a tracker that is
// sometimes full.
func TestWholeLifecycleTellsTheSame(t *testing.T) {
	churn := churnSummary(t)
	var passes []wire.Event
	for pass := range 3 {
		for _, ev := range churn {
			ev.Cookie += uint64(pass) << 40 // new sockets on the same 4-tuples
			ev.Mono += time.Duration(pass) * time.Second
			for i := range ev.Life.Steps {
				ev.Life.Step[i].Mono += time.Duration(pass) * time.Second
			}
			passes = append(passes, ev)
		}
	}
	whole := compareWhole(t, "churn", passes, 0, 0)
	if whole < 1000 {
		t.Errorf("churn: %d lifecycles told without an entry, want the 1200 normal ends", whole)
	}
	if n := countNotices(t, passes, "time_wait_syn_accepted"); n == 0 {
		t.Error("churn: no TIME_WAIT 4-tuple reopened: the passes do not test the TIME_WAIT memory")
	}

	files, err := filepath.Glob("testdata/*.hex")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recordings: %v", err)
	}
	whole = 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".hex")
		rec := loadRecording(t, name)
		whole += compareWhole(t, name, summarise(rec.events), rec.closeWaitAfter, 0)
	}
	if whole == 0 {
		t.Error("no recorded scenario has a lifecycle told without an entry")
	}

	rng := rand.New(rand.NewPCG(21, 1))
	whole = 0
	for run := range 200 {
		maxConns := 0
		if run%2 == 1 {
			maxConns = 3
		}
		whole += compareWhole(t, fmt.Sprintf("random %d", run), randomLifecycles(rng, 300), 0, maxConns)
	}
	if whole == 0 {
		t.Error("no random lifecycle told without an entry")
	}
}

// compareWhole feeds evs to a tracker with and without whole.go's path
// and fails on any difference; it returns how many lifecycles went
// without an entry.
func compareWhole(t *testing.T, name string, evs []wire.Event, closeWaitAfter time.Duration, maxConns int) int {
	t.Helper()
	type told struct {
		narratives []Narrative
		notices    []Notice
		owners     []uint32
		stats      Stats
		whole      int
	}
	run := func(unfoldOnly bool) told {
		var out told
		owners := &loggedOwners{log: &out.owners}
		tr := New(Config{All: true, ReuseNarratives: true, ResetReasons: testReasons, CloseWaitAfter: closeWaitAfter,
			DropsSeen: true, DropReasons: testDropReasons, MaxConns: maxConns, Owners: owners,
			Notices: func(n *Notice) { out.notices = append(out.notices, *n) }}, func(n *Narrative) {
			cp := *n
			cp.Timeline = slices.Clone(n.Timeline)
			out.narratives = append(out.narratives, cp)
		})
		tr.unfoldOnly = unfoldOnly
		var last time.Duration
		for i := range evs {
			ev := evs[i]
			made := tr.tracked + int(tr.evictions)
			tr.Handle(&ev)
			if ev.Kind == wire.KindLifecycle && ev.Flags&wire.FlagLifeDestroyed != 0 && tr.scratch != nil &&
				tr.tracked+int(tr.evictions) == made && tr.scratch.cookie == ev.Cookie && tr.byCookie[ev.Cookie] == nil {
				out.whole++
			}
			last = max(last, ev.Mono)
		}
		tr.Flush(last + time.Second)
		out.stats = tr.Stats()
		return out
	}
	generic, whole := run(true), run(false)
	sortFolds(generic.narratives)
	sortFolds(whole.narratives)
	if generic.whole != 0 {
		t.Fatalf("%s: the generic path told %d lifecycles without an entry", name, generic.whole)
	}
	for i := range min(len(generic.narratives), len(whole.narratives)) {
		if !reflect.DeepEqual(generic.narratives[i], whole.narratives[i]) {
			t.Fatalf("%s: narrative %d differs without an entry:\n%+v\nwith one:\n%+v", name, i, whole.narratives[i], generic.narratives[i])
		}
	}
	if len(generic.narratives) != len(whole.narratives) {
		t.Fatalf("%s: %d narratives without an entry, %d with one", name, len(whole.narratives), len(generic.narratives))
	}
	if !reflect.DeepEqual(generic.notices, whole.notices) {
		t.Fatalf("%s: notices differ without an entry:\n%+v\nwith one:\n%+v", name, whole.notices, generic.notices)
	}
	// (The same questions: the folds of connect() failures ask in map order.)
	slices.Sort(generic.owners)
	slices.Sort(whole.owners)
	if !slices.Equal(generic.owners, whole.owners) {
		t.Fatalf("%s: owners asked %v without an entry, %v with one", name, whole.owners, generic.owners)
	}
	if !reflect.DeepEqual(generic.stats, whole.stats) {
		t.Fatalf("%s: stats %+v without an entry, %+v with one", name, whole.stats, generic.stats)
	}
	return whole.whole
}

// sortFolds puts the folds of connect() failures, told in map order at
// one time, in the order of their cookies.
func sortFolds(told []Narrative) {
	slices.SortStableFunc(told, func(a, b Narrative) int {
		key := func(n Narrative) (time.Duration, bool, uint64) {
			if n.Verdict != LocalPortsExhausted {
				return n.Mono, false, 0
			}
			return n.Mono, true, n.Cookie
		}
		am, af, ac := key(a)
		bm, bf, bc := key(b)
		switch {
		case am != bm:
			return cmp.Compare(am, bm)
		case af != bf:
			return boolInt(af) - boolInt(bf)
		}
		return cmp.Compare(ac, bc)
	})
}

func countNotices(t *testing.T, evs []wire.Event, kind string) int {
	n := 0
	tr := New(Config{All: true, Notices: func(no *Notice) {
		if no.Kind == kind {
			n++
		}
	}}, func(*Narrative) {})
	for i := range evs {
		ev := evs[i]
		tr.Handle(&ev)
	}
	return n
}

// loggedOwners answers for odd inodes, and logs every question.
type loggedOwners struct{ log *[]uint32 }

func (o *loggedOwners) Owner(inode uint32) (uint32, string, bool) {
	*o.log = append(*o.log, inode)
	return inode, "owner", inode%2 == 1
}

func (o *loggedOwners) Known(inode uint32) (uint32, string, bool) {
	*o.log = append(*o.log, inode|1<<31)
	return inode, "known", inode%3 == 1
}

// churnSummary is the engine's churn recording with --all's summaries: 200
// loopback connections, both ends.
func churnSummary(t *testing.T) []wire.Event {
	return churnRecording(t, "../engine/testdata/churn200-summary.rec.gz")
}

// summarise folds each socket's state records into one lifecycle record
// at its destroy, as the kernel half does for a socket with nothing else
// to tell (bpf/lifecycle.h), for the sockets whose records are only that.
func summarise(evs []wire.Event) []wire.Event {
	only := map[uint64]int{} // state records before the destroy; -1: something else
	for i := range evs {
		ev := &evs[i]
		if ev.Cookie == 0 || only[ev.Cookie] < 0 {
			continue
		}
		switch {
		case ev.Kind == wire.KindState && ev.State != tcp.StateListen && ev.OldState != tcp.StateListen:
			only[ev.Cookie]++
		case ev.Kind == wire.KindDestroy && only[ev.Cookie] > 0 && only[ev.Cookie] <= wire.LifeSteps:
		default:
			only[ev.Cookie] = -1
		}
	}
	var out []wire.Event
	life := map[uint64]*wire.Life{}
	for _, ev := range evs {
		if ev.Cookie == 0 || only[ev.Cookie] <= 0 {
			out = append(out, ev)
			continue
		}
		l := life[ev.Cookie]
		if l == nil {
			l = &wire.Life{}
			life[ev.Cookie] = l
		}
		if ev.Kind == wire.KindState {
			l.Step[l.Steps] = wire.LifeStep{Mono: ev.Mono, Old: ev.OldState, State: ev.State}
			l.Steps++
			continue
		}
		ev.Kind, ev.Life = wire.KindLifecycle, *l
		ev.Flags |= wire.FlagLifeDestroyed
		out = append(out, ev)
	}
	return out
}

// randomLifecycles is n records on two 4-tuples (both ends of each) and a
// few cookies: mostly whole lifecycles of the usual shapes, with any of
// the flags a state record can carry, among records of other kinds, a
// lifecycle sent before the end, cookies told again, listeners, and time
// that sometimes jumps past TIME_WAIT.
func randomLifecycles(rng *rand.Rand, n int) []wire.Event {
	lo := netip.MustParseAddr("127.0.0.1")
	srv := netip.AddrPortFrom(lo, 47311)
	clients := []netip.AddrPort{netip.AddrPortFrom(lo, 40000), netip.AddrPortFrom(lo, 40001)}
	S := func(old, st tcp.State) [2]tcp.State { return [2]tcp.State{old, st} }
	shapes := [][][2]tcp.State{
		{S(tcp.StateClose, tcp.StateSynSent), S(tcp.StateSynSent, tcp.StateEstablished), S(tcp.StateEstablished, tcp.StateCloseWait),
			S(tcp.StateCloseWait, tcp.StateLastAck), S(tcp.StateLastAck, tcp.StateClose)},
		{S(tcp.StateSynRecv, tcp.StateEstablished), S(tcp.StateEstablished, tcp.StateFinWait1), S(tcp.StateFinWait1, tcp.StateFinWait2),
			S(tcp.StateFinWait2, tcp.StateClose)},
		{S(tcp.StateClose, tcp.StateSynSent), S(tcp.StateSynSent, tcp.StateEstablished), S(tcp.StateEstablished, tcp.StateFinWait1),
			S(tcp.StateFinWait1, tcp.StateClosing), S(tcp.StateClosing, tcp.StateClose)},
		{S(tcp.StateClose, tcp.StateSynSent), S(tcp.StateSynSent, tcp.StateClose)},
		{S(tcp.StateSynRecv, tcp.StateEstablished), S(tcp.StateEstablished, tcp.StateClose)},
		{S(tcp.StateListen, tcp.StateSynRecv), S(tcp.StateSynRecv, tcp.StateEstablished), S(tcp.StateEstablished, tcp.StateCloseWait),
			S(tcp.StateCloseWait, tcp.StateLastAck), S(tcp.StateLastAck, tcp.StateClose)},
	}
	flags := []wire.Flags{wire.FlagOwnerExiting, wire.FlagOrphan, wire.FlagCloseWaitStuck, wire.FlagNoLocalPort, wire.FlagNoSocket}
	kinds := []wire.Kind{wire.KindState, wire.KindDestroy, wire.KindRecvReset, wire.KindSendReset, wire.KindError, wire.KindTimeWait,
		wire.KindKeepalive, wire.KindRetransmit}
	mono := time.Hour
	cookie := uint64(1000)
	var out []wire.Event
	for range n {
		mono += time.Duration(rng.IntN(20)) * time.Millisecond
		if rng.IntN(40) == 0 {
			mono += timeWaitLen + time.Duration(rng.IntN(2000))*time.Millisecond
		}
		if rng.IntN(6) != 0 {
			cookie++
		}
		client := clients[rng.IntN(len(clients))]
		ev := wire.Event{Mono: mono, Time: time.Unix(1_800_000_000, 0).Add(mono), Cookie: cookie, NetNS: 1,
			Local: srv, Remote: client, PID: uint32(rng.IntN(3)), Inode: uint32(rng.IntN(6)), CgroupID: uint64(rng.IntN(2))}
		if rng.IntN(2) == 0 {
			ev.Local, ev.Remote = client, srv
		}
		ev.SetComm("churn")
		for _, f := range flags {
			if rng.IntN(12) == 0 {
				ev.Flags |= f
			}
		}
		if rng.IntN(10) == 0 {
			ev.SkErr = 104
		}
		if rng.IntN(5) == 0 {
			k := kinds[rng.IntN(len(kinds))]
			ev.Kind = k
			ev.State = tcp.State(1 + rng.IntN(12))
			ev.OldState = tcp.State(1 + rng.IntN(12))
			if rng.IntN(3) == 0 {
				ev.Cookie = 0 // as the keepalive timer's records: found by 4-tuple
			}
			if k == wire.KindTimeWait {
				ev.TimeWait.Seen = wire.TimeWaitSeen(rng.IntN(5))
			}
			out = append(out, ev)
			continue
		}
		shape := shapes[rng.IntN(len(shapes))]
		shape = shape[:1+rng.IntN(len(shape))]
		at := mono - time.Duration(len(shape))*time.Millisecond
		ev.Kind, ev.State = wire.KindLifecycle, shape[len(shape)-1][1]
		for i, s := range shape {
			ev.Life.Step[i] = wire.LifeStep{Mono: at + time.Duration(i)*time.Millisecond, Old: s[0], State: s[1]}
		}
		ev.Life.Steps = len(shape)
		if rng.IntN(8) != 0 {
			ev.Flags |= wire.FlagLifeDestroyed
		}
		if rng.IntN(10) == 0 {
			ev.FirstSeen = at - time.Millisecond
		}
		out = append(out, ev)
	}
	return out
}
