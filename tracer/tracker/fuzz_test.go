package tracker

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// FuzzTracker feeds decoded records, in any order and with any content, to
// the tracker, with loss reports and reconciliations among them. Whatever
// comes, it must not panic, must tell at most one final narrative per
// connection and nothing about a connection after it.
//
// The input is a sequence of chunks: one control byte, then one record.
// The control byte's low bits say whether records were lost before it and
// whether the tracker is reconciled (with an oracle that says the
// connection is gone when its cookie is odd) before it.
func FuzzTracker(f *testing.F) {
	// Seeds: the lab's recordings of the real kernel, one control byte per record.
	paths, _ := filepath.Glob("testdata/*.hex")
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		evs, err := wire.ReadRecording(bytes.NewReader(raw), time.Unix(1_800_000_000, 0))
		if err != nil {
			f.Fatal(err)
		}
		// The first records only: the fuzzer mutates small inputs far faster.
		evs = evs[:min(len(evs), 24)]
		var in []byte
		for i := range evs {
			in = append(in, byte(i%7))
			in = append(in, wire.Encode(&evs[i])...)
		}
		f.Add(in)
	}
	// A chunk's record is an event's size, or a lifecycle summary's when
	// its kind says so (the fuzzer turns any record into one).
	size := len(wire.Encode(&wire.Event{}))
	lifeSize := len(wire.Encode(&wire.Event{Kind: wire.KindLifecycle}))
	clock := wire.NewClock(0, time.Unix(1_800_000_000, 0))
	f.Fuzz(func(t *testing.T, in []byte) {
		type key struct {
			cookie uint64
			tuple  tupleKey
		}
		keyOf := func(cookie uint64, netns uint32, l, r netip.AddrPort) key {
			if cookie != 0 {
				return key{cookie: cookie}
			}
			return key{tuple: tupleKey{netns, l, r}}
		}
		final := map[key]Verdict{}
		var told []Narrative
		tr := New(Config{All: in != nil && len(in)%2 == 0, ResetReasons: tcp.ResetReasons{1: "NO_SOCKET"}}, func(n *Narrative) {
			k := keyOf(n.Cookie, n.NetNS, n.Local, n.Remote)
			if os.Getenv("FUZZDEBUG") != "" {
				t.Logf("told %s final=%v cookie=%d mono=%v %v %v", n.Verdict, n.Final, n.Cookie, n.Mono, n.Local, n.Remote)
			}
			if v, ok := final[k]; ok {
				t.Fatalf("%s told after the final %s for %+v", n.Verdict, v, k)
			}
			if n.Final {
				final[k] = n.Verdict
			}
			if n.Verdict == Untold && !n.Final {
				t.Fatalf("untold must be final: %+v", n)
			}
			told = append(told, *n)
		})
		// A real kernel never reuses a cookie, and a 4-tuple only after its
		// socket is destroyed: records after that are a new connection's,
		// which the harness cannot tell apart, so it skips them.
		retired := map[key]bool{}
		var mono time.Duration
		var ev wire.Event
		for len(in) >= 1+size {
			n := size
			if err := wire.Decode(in[1:1+size], clock, &ev); errors.Is(err, wire.ErrRecordSize) {
				if len(in) < 1+lifeSize {
					break
				}
				n = lifeSize
			}
			ctl, raw := in[0], in[1:1+n]
			in = in[1+n:]
			if err := wire.Decode(raw, clock, &ev); err != nil {
				t.Fatal(err)
			}
			// Time moves forward, by at most 2 s per record.
			mono += time.Duration(uint64(ev.Mono) % uint64(2*time.Second))
			ev.Mono, ev.Time = mono, clock.Wall(mono)
			if ev.FirstSeen > mono {
				ev.FirstSeen = 0
			}
			tk := keyOf(0, ev.NetNS, ev.Local, ev.Remote)
			if ctl&1 != 0 {
				tr.RecordsLost()
			}
			if ctl&2 != 0 {
				tr.Reconcile(mono, mono, func(netns uint32, cookie uint64, l, r netip.AddrPort) bool {
					if cookie%2 == 1 || (cookie == 0 && ctl&4 != 0) {
						retired[keyOf(cookie, netns, l, r)] = true
						retired[keyOf(0, netns, l, r)] = true
						return false
					}
					return true
				})
			}
			// After the table said a socket is gone, the kernel sends
			// nothing more of it.
			if retired[keyOf(ev.Cookie, 0, netip.AddrPort{}, netip.AddrPort{})] && ev.Cookie != 0 || retired[tk] {
				continue
			}
			if os.Getenv("FUZZDEBUG") != "" {
				t.Logf("ev %s cookie=%d mono=%v %v %v state=%v ctl=%d", ev.Kind, ev.Cookie, ev.Mono, ev.Local, ev.Remote, ev.State, ctl)
			}
			tr.Handle(&ev)
			if ev.Kind == wire.KindDestroy {
				if ev.Cookie != 0 {
					retired[keyOf(ev.Cookie, 0, netip.AddrPort{}, netip.AddrPort{})] = true
				}
				retired[tk] = true
			}
		}
		tr.Flush(mono + time.Second)
		if s := tr.Stats(); s.Tracked < 0 {
			t.Fatalf("tracked %d", s.Tracked)
		}
	})
}
