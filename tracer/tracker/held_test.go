package tracker

import (
	"compress/gzip"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// A normal end held compact (held.go) is told as it would have been held
// whole: the same narratives, field for field, timelines included, in the
// same order, with and without ReuseNarratives, for the engine's churn
// recordings (summarised and every record, its 4-tuples reopened), every
// recorded scenario (as recorded and summarised) and random streams of
// lifecycles; and the compact path is the one taken for the churn's ends.
func TestHeldEndsTellTheSame(t *testing.T) {
	summary := churnSummary(t)
	every := churnRecording(t, "../engine/testdata/churn200.rec.gz")
	var passes []wire.Event
	for pass := range 3 {
		for _, ev := range summary {
			ev.Cookie += uint64(pass) << 40
			ev.Mono += time.Duration(pass) * time.Second
			for i := range ev.Life.Steps {
				ev.Life.Step[i].Mono += time.Duration(pass) * time.Second
			}
			passes = append(passes, ev)
		}
	}
	if held := compareHeld(t, "churn summarised", passes, 0, 0); held != 1200 {
		t.Errorf("churn summarised: %d ends held compact, want all 1200", held)
	}
	if held := compareHeld(t, "churn", every, 0, 0); held != 400 {
		t.Errorf("churn: %d ends held compact, want all 400", held)
	}

	files, err := filepath.Glob("testdata/*.hex")
	if err != nil || len(files) == 0 {
		t.Fatalf("no recordings: %v", err)
	}
	held := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".hex")
		rec := loadRecording(t, name)
		held += compareHeld(t, name, rec.events, rec.closeWaitAfter, 0)
		held += compareHeld(t, name+" summarised", summarise(rec.events), rec.closeWaitAfter, 0)
	}
	if held == 0 {
		t.Error("no recorded scenario has an end held compact")
	}

	rng := rand.New(rand.NewPCG(21, 2))
	held = 0
	for run := range 100 {
		held += compareHeld(t, fmt.Sprintf("random %d", run), randomLifecycles(rng, 300), 0, 3*(run%2))
	}
	if held == 0 {
		t.Error("no random end held compact")
	}
}

// compareHeld feeds evs to trackers that hold every narrative whole and
// to ones that hold normal ends compact, with and without reuse, and fails
// on any difference; it returns how many ends were held compact.
func compareHeld(t *testing.T, name string, evs []wire.Event, closeWaitAfter time.Duration, maxConns int) int {
	t.Helper()
	run := func(holdWhole, reuse bool) (told []Narrative, held int) {
		var tr *Tracker
		tr = New(Config{All: true, ReuseNarratives: reuse, ResetReasons: testReasons, CloseWaitAfter: closeWaitAfter,
			DropsSeen: true, DropReasons: testDropReasons, MaxConns: maxConns, Owners: &loggedOwners{log: new([]uint32)},
			Notices: func(*Notice) {}}, func(n *Narrative) {
			if n == tr.unpacked {
				held++
			}
			cp := *n
			cp.Timeline = slices.Clone(n.Timeline)
			told = append(told, cp)
		})
		tr.holdWhole = holdWhole
		var last time.Duration
		for i := range evs {
			ev := evs[i]
			tr.Handle(&ev)
			last = max(last, ev.Mono)
		}
		tr.Flush(last + time.Second)
		sortFolds(told)
		return told, held
	}
	whole, none := run(true, true)
	if none != 0 {
		t.Fatalf("%s: %d ends held compact with holdWhole", name, none)
	}
	held := 0
	for _, reuse := range []bool{true, false} {
		compact, n := run(false, reuse)
		if reuse {
			held = n
		}
		for i := range min(len(whole), len(compact)) {
			if !reflect.DeepEqual(whole[i], compact[i]) {
				t.Fatalf("%s (reuse %v): narrative %d differs held compact:\n%+v\nheld whole:\n%+v", name, reuse, i, compact[i], whole[i])
			}
		}
		if len(whole) != len(compact) {
			t.Fatalf("%s (reuse %v): %d narratives held compact, %d held whole", name, reuse, len(compact), len(whole))
		}
	}
	return held
}

func churnRecording(t *testing.T, path string) []wire.Event {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := wire.ReadRecording(gz, time.Unix(1_800_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// Every field of Narrative, whatever it holds, either comes back from a
// held end as it went in or keeps the narrative whole: a field added to
// Narrative later cannot be lost on the way.
func TestHeldEndCarriesEverything(t *testing.T) {
	tr := New(Config{All: true, ResetReasons: testReasons}, func(*Narrative) {})
	c := &conn{firstMono: time.Hour, droppedSteps: 3, steps: []step{
		{mono: time.Hour, kind: wire.KindState, state: tcp.StateSynSent, old: tcp.StateClose, rtoMs: 1000},
		{mono: time.Hour + time.Millisecond, kind: wire.KindSendReset, detail: 2, flags: 0x81, state: tcp.StateEstablished,
			old: tcp.StateSynSent, ca: tcp.CAState(4), oldCA: tcp.CAState(1), retransmits: 3, probes: 4, existing: true, resent: true},
	}}
	base := Narrative{Final: true, Verdict: LocalClosed, Budget: Budget{Setting: "tcp_retries2"}}
	check := func(what string, n *Narrative) bool {
		t.Helper()
		var h heldEnd
		if !h.pack(n, c) {
			return false
		}
		got := Narrative{Timeline: make([]Step, 1)} // a reused one's array
		tr.unpack(&got, &h, n.Mono)
		want := *n
		want.Timeline = tr.timeline(nil, c)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: held compact, told\n%+v\nwant\n%+v", what, got, want)
		}
		return true
	}
	if !check("a normal end", &base) {
		t.Fatal("a normal end is not held compact")
	}
	fields := 0
	var walk func(path string, v reflect.Value)
	walk = func(path string, v reflect.Value) {
		if v.Kind() == reflect.Struct && v.Type() != reflect.TypeFor[time.Time]() && v.Type() != reflect.TypeFor[netip.AddrPort]() {
			for i := range v.NumField() {
				walk(path+"."+v.Type().Field(i).Name, v.Field(i))
			}
			return
		}
		fields++
		old := reflect.New(v.Type()).Elem()
		old.Set(v)
		for _, x := range oddValues(v.Type()) {
			v.Set(x)
			check(fmt.Sprintf("%s = %v", path, x), &base)
		}
		v.Set(old)
	}
	walk("Narrative", reflect.ValueOf(&base).Elem())
	if fields < 80 {
		t.Errorf("only %d fields walked", fields)
	}
	// The steps, and what is not kept of them, as they are.
	for _, d := range []int{0, 1 << 20, math.MaxInt32 + 1} {
		c.droppedSteps = d
		check(fmt.Sprintf("dropped %d", d), &base)
	}
	c.steps = slices.Repeat(c.steps, 5)
	if check("10 steps", &base) {
		t.Errorf("a timeline longer than %d steps was held compact", maxHeldSteps)
	}
	c.steps = nil
	if check("no step", &base) {
		t.Error("a narrative without a timeline was held compact")
	}
}

// oddValues are values of t other than its zero, at its edges.
func oddValues(t reflect.Type) []reflect.Value {
	var out []reflect.Value
	add := func(x any) { out = append(out, reflect.ValueOf(x).Convert(t)) }
	switch t.Kind() {
	case reflect.Bool:
		add(true)
	case reflect.Int, reflect.Int64:
		add(1)
		add(-1)
		add(math.MaxInt32 + 1)
		add(math.MinInt64)
	case reflect.Int8, reflect.Int16, reflect.Int32:
		add(1)
		add(-1)
		v := reflect.New(t).Elem()
		v.SetInt(-1 << (t.Bits() - 1))
		out = append(out, v)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		add(1)
		add(15)
		add(16)
		v := reflect.New(t).Elem()
		v.SetUint(math.MaxUint64 >> (64 - t.Bits()))
		out = append(out, v)
	case reflect.String:
		for _, s := range []string{"x", "tcp_retries2", "TCP_USER_TIMEOUT", "tcp_orphan_retries", "tcp_syn_retries", string(PeerClosed),
			string(Stalled), string(Untold)} {
			add(s)
		}
	case reflect.Slice:
		out = append(out, reflect.MakeSlice(t, 1, 1), reflect.MakeSlice(t, 0, 0))
	case reflect.Pointer:
		out = append(out, reflect.New(t.Elem()))
	case reflect.Struct:
		switch t {
		case reflect.TypeFor[time.Time]():
			add(time.Unix(1_800_000_000, 7).In(time.FixedZone("x", 3600)))
			add(time.Now())
		case reflect.TypeFor[netip.AddrPort]():
			add(netip.MustParseAddrPort("10.0.0.1:80"))
			add(netip.MustParseAddrPort("[fe80::1%eth0]:443"))
		}
	}
	if len(out) == 0 {
		panic("no odd values of " + t.String())
	}
	return out
}

// The held queue gives what a stable sort by time of everything held
// gives, whatever the order of the pushes, the takes and the drops, held
// whole or compact, across the ring's growth, wrap and shrink.
func TestHeldQueueIsAStableSort(t *testing.T) {
	type item struct {
		at    time.Duration
		seq   uint64
		whole bool
	}
	r := rand.New(rand.NewPCG(3, 4))
	var q heldQueue
	var ref []item // what is still held, in push order
	seqOf := func(h *held) (uint64, bool) {
		if h.full != nil {
			return h.full.Cookie, true
		}
		return h.end.cookie, false
	}
	taken, dropped, room := 0, 0, 0
	var seq uint64
	now := time.Duration(0)
	for round := 0; round < 40000; round++ {
		switch k := r.IntN(20); {
		case k < 9:
			// Mostly in order, sometimes late, sometimes equal times; in
			// bursts that grow the ring.
			for range 1 + r.IntN(3)*r.IntN(200)/100 {
				now += time.Duration(r.IntN(3))
				at := now - time.Duration(r.IntN(2)*r.IntN(5))
				whole := r.IntN(3) == 0
				if whole {
					q.Push(at, &Narrative{Cookie: seq})
				} else {
					q.slot(at).end.cookie = seq
				}
				ref = append(ref, item{at, seq, whole})
				seq++
			}
		case k < 18:
			slices.SortStableFunc(ref, func(a, b item) int { return int(a.at - b.at) })
			h := q.Front()
			if (h != nil) != (len(ref) > 0) {
				t.Fatalf("round %d: Front %v with %d held", round, h, len(ref))
			}
			if h == nil {
				continue
			}
			if s, whole := seqOf(h); h.at != ref[0].at || s != ref[0].seq || whole != ref[0].whole {
				t.Fatalf("round %d: Front = (%v, %d, whole %v), want %+v", round, h.at, s, whole, ref[0])
			}
			q.Pop()
			taken++
			ref = ref[1:]
		case k == 18:
			// refuseAfterEnd's kind of drop: some whole ones.
			odd := func(at time.Duration, n *Narrative) bool { return n.Cookie%5 == 0 }
			dropped += q.DropIf(odd)
			ref = slices.DeleteFunc(ref, func(it item) bool { return it.whole && it.seq%5 == 0 })
		default:
			q.shrink()
		}
		if q.Len() != len(ref) {
			t.Fatalf("round %d: Len = %d, want %d", round, q.Len(), len(ref))
		}
		room = max(room, len(q.ring))
	}
	if taken == 0 || dropped == 0 || room <= minHeld {
		t.Fatalf("%d taken, %d dropped, room for %d at most: the test did not exercise the queue", taken, dropped, room)
	}
}
