package tracer_test

import (
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Issue #21: with --all the kernel summarises a normal lifecycle and sends
// one record per end (bpf/lifecycle.h). Two tracers watch the same real
// loopback connections, one sending every state change (as --events, and
// --all before), one summarising (--all); the summary records hold the
// state changes of each end, its owner and inode, and a tracker told
// either stream tells the same narratives: same verdicts, owners, inodes
// and timelines (the step times within the microseconds between two
// programs on one tracepoint).
func TestLifecycleSummaryOnLoopback(t *testing.T) {
	testkit.RequirePrivileged(t)
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			port := uint16(ln.Addr().(*net.TCPAddr).Port)
			full := startTracer(t, tracer.Config{All: true, FilterPort: port})
			summary := startTracer(t, tracer.Config{All: true, Summarize: true, FilterPort: port})

			// The client closes first, then the server does.
			clientFirst := loopbackConn(t, ln, network, true)
			serverFirst := loopbackConn(t, ln, network, false)
			ends := []netip.AddrPort{clientFirst, serverFirst}
			server := netip.MustParseAddrPort(ln.Addr().String())

			// Each end: one lifecycle record that stands for its destroy.
			me := uint32(os.Getpid())
			for _, cli := range ends {
				for _, side := range []struct {
					local, remote netip.AddrPort
					first         tcp.State
				}{{cli, server, tcp.StateSynSent}, {server, cli, tcp.StateEstablished}} {
					l := summary.wait(t, 5*time.Second, "lifecycle of "+side.local.String()+" -> "+side.remote.String(), func(e *wire.Event) bool {
						return e.Kind == wire.KindLifecycle && e.Local == side.local && e.Remote == side.remote
					})
					if l.Flags&wire.FlagLifeDestroyed == 0 || l.State != tcp.StateClose || l.Cookie == 0 || l.Inode == 0 {
						t.Errorf("%v: flags %b state %v cookie %d inode %d, want a destroyed CLOSE with cookie and inode", side.local, l.Flags, l.State, l.Cookie, l.Inode)
					}
					steps := l.Life.Step[:l.Life.Steps]
					if len(steps) < 4 || steps[0].State != side.first || steps[len(steps)-1].State != tcp.StateClose {
						t.Errorf("%v: steps %v, want from %v to CLOSE", side.local, steps, side.first)
					}
					for i := 1; i < len(steps); i++ {
						if steps[i].Old != steps[i-1].State || steps[i].Mono < steps[i-1].Mono || steps[i].Mono > l.Mono {
							t.Errorf("%v: step %d %+v does not follow %+v (record at %v)", side.local, i, steps[i], steps[i-1], l.Mono)
						}
					}
					if side.first == tcp.StateSynSent && (l.PID != me || l.Owner != wire.OwnerConnect || l.FirstSeen == 0) {
						t.Errorf("client %v: owner %d (%v) first seen %v, want %d by connect", side.local, l.PID, l.Owner, l.FirstSeen, me)
					}
				}
			}
			// Every record of the full tracer has come (its last: the destroys).
			for _, cli := range ends {
				for _, local := range []netip.AddrPort{cli, server} {
					remote := server
					if local == server {
						remote = cli
					}
					full.wait(t, 5*time.Second, "destroy of "+local.String(), func(e *wire.Event) bool {
						return e.Kind == wire.KindDestroy && e.Local == local && e.Remote == remote
					})
				}
			}
			if n := summary.count(func(e *wire.Event) bool { return e.Kind != wire.KindLifecycle }); n != 0 {
				summary.dump(t)
				t.Errorf("%d records besides the lifecycles of the connections", n)
			}

			sameNarratives(t, full.snapshot(), summary.snapshot(), 4)
		})
	}
}

// Anything abnormal takes the full path, after the states summarised so
// far: a reset sent on close with unread data (the server's end), the
// reset received and its error (the client's), and a refused connect,
// are told from the summarising tracer's records as from every record.
func TestLifecycleSummaryAbnormal(t *testing.T) {
	testkit.RequirePrivileged(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	full := startTracer(t, tracer.Config{All: true, FilterPort: port})
	summary := startTracer(t, tracer.Config{All: true, Summarize: true, FilterPort: port})

	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	s.Close() // 100 unread bytes: RST, not FIN
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read after the reset: no error")
	}
	c.Close()
	ln.Close()
	if _, err := net.DialTimeout("tcp4", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("connect to a closed port succeeded")
	}
	for _, col := range []*collector{full, summary} {
		col.wait(t, 5*time.Second, "the refused connect's destroy", func(e *wire.Event) bool {
			return (e.Kind == wire.KindDestroy || e.Kind == wire.KindLifecycle && e.Flags&wire.FlagLifeDestroyed != 0) &&
				e.Remote.Port() == port && int(e.Local.Port()) != c.LocalAddr().(*net.TCPAddr).Port
		})
	}
	// The reset's record comes after the summary of the states before it.
	rec := summary.snapshot()
	i := slices.IndexFunc(rec, func(e wire.Event) bool { return e.Kind == wire.KindSendReset && e.Local.Port() == port })
	j := slices.IndexFunc(rec, func(e wire.Event) bool { return e.Kind == wire.KindLifecycle && e.Local.Port() == port })
	if i < 0 || j < 0 || j > i || rec[j].Flags&wire.FlagLifeDestroyed != 0 {
		summary.dump(t)
		t.Fatalf("server end: reset at %d, its summary at %d, want a summary without the destroy first", i, j)
	}
	sameNarratives(t, full.snapshot(), summary.snapshot(), 3)
}

// programSkew checks that the summarising tracer timed each state change
// at the change: a summarised step comes at or after the full tracer's
// record of that change (the full tracer's program runs first on the
// tracepoint: it was attached first) and before the full tracer's record
// of the socket's next change. It returns how far apart the two tracers'
// programs ran on one tracepoint at most, over the steps and the records
// both sent (resets, errors, a destroy and the summary standing for it): microseconds on a real CPU, up to 11 ms in
// the qemu TCG guests, whose vCPUs take turns on one host thread while the
// guest clock follows the host's (6.1 guest: a client's SYN_SENT 1.4 and
// 11 ms, a server's reset sent 1.5 ms apart).
func programSkew(t *testing.T, full, summary []wire.Event) time.Duration {
	t.Helper()
	var skew time.Duration
	changes := func(cookie uint64) []wire.Event { // by cookie: a connect's SYN_SENT has no local port yet
		var out []wire.Event
		for _, e := range full {
			if e.Kind == wire.KindState && e.Cookie == cookie {
				out = append(out, e)
			}
		}
		return out
	}
	for _, l := range summary {
		if l.Kind != wire.KindLifecycle {
			same := slices.IndexFunc(full, func(e wire.Event) bool {
				return e.Kind == l.Kind && e.Cookie == l.Cookie && e.State == l.State && e.OldState == l.OldState
			})
			if same >= 0 {
				skew = max(skew, (l.Mono - full[same].Mono).Abs())
			}
			continue
		}
		if l.Flags&wire.FlagLifeDestroyed != 0 { // it stands for the destroy's record, and is timed as it
			d := slices.IndexFunc(full, func(e wire.Event) bool { return e.Kind == wire.KindDestroy && e.Cookie == l.Cookie })
			if d >= 0 {
				skew = max(skew, (l.Mono - full[d].Mono).Abs())
			}
		}
		fc := changes(l.Cookie)
		for _, step := range l.Life.Step[:l.Life.Steps] {
			k := slices.IndexFunc(fc, func(e wire.Event) bool { return e.OldState == step.Old && e.State == step.State })
			if k < 0 {
				t.Errorf("%v: summarised %v->%v, not among the full tracer's changes", l.Local, step.Old, step.State)
				continue
			}
			if step.Mono < fc[k].Mono || k+1 < len(fc) && step.Mono > fc[k+1].Mono {
				t.Errorf("%v: %v->%v summarised at %v, the change at %v (next change at %v)", l.Local, step.Old, step.State,
					step.Mono, fc[k].Mono, fc[min(k+1, len(fc)-1)].Mono)
			}
			skew = max(skew, step.Mono-fc[k].Mono)
		}
	}
	return skew
}

// sameNarratives compares the narratives a tracker told from every record
// (want) and from the summarising tracer's (got). Their times may differ
// by how far apart the two tracers' programs ran (programSkew), twice: a
// step's time is told from the connection's first.
func sameNarratives(t *testing.T, full, summary []wire.Event, n int) {
	t.Helper()
	stepSkew := time.Millisecond + 2*programSkew(t, full, summary)
	want, got := narrate(full), narrate(summary)
	if len(want) != n || len(got) != len(want) {
		t.Fatalf("%d narratives from every record, %d from the summaries, want %d each", len(want), len(got), n)
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.Verdict != w.Verdict || g.Local != w.Local || g.Remote != w.Remote || g.Cookie != w.Cookie ||
			g.Owner != w.Owner || g.Inode != w.Inode || g.State != w.State || g.Orphan != w.Orphan ||
			g.Errno != w.Errno || g.NetNS != w.NetNS || g.CgroupID != w.CgroupID || g.SentReset != w.SentReset ||
			g.ResetReason != w.ResetReason {
			t.Errorf("from the summary:\n%+v\nfrom every record:\n%+v", g, w)
		}
		if len(g.Timeline) != len(w.Timeline) {
			t.Errorf("%v: timeline %v from the summary, %v from every record", g.Local, g.Timeline, w.Timeline)
			continue
		}
		for j := range w.Timeline {
			ws, gs := w.Timeline[j], g.Timeline[j]
			if gs.Kind != ws.Kind || gs.State != ws.State || gs.Old != ws.Old || (gs.At-ws.At).Abs() > stepSkew {
				t.Errorf("%v step %d: %+v from the summary, %+v from every record", g.Local, j, gs, ws)
			}
		}
		t.Logf("%s %v -> %v: %d steps, owner %+v, times within %v", g.Verdict, g.Local, g.Remote, len(g.Timeline), g.Owner, stepSkew)
	}
}

// loopbackConn makes one connection to ln, with a byte each way, closed
// first by the client or by the server; it returns the client's address.
func loopbackConn(t *testing.T, ln net.Listener, network string, clientFirst bool) netip.AddrPort {
	t.Helper()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := c.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	first, second := c, s
	if !clientFirst {
		first, second = s, c
	}
	first.Close()
	if _, err := second.Read(buf); err != io.EOF {
		t.Fatalf("read after the peer's close: %v", err)
	}
	second.Close()
	return netip.MustParseAddrPort(c.LocalAddr().String())
}

func (c *collector) snapshot() []wire.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

func (c *collector) count(pred func(*wire.Event) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for i := range c.events {
		if pred(&c.events[i]) {
			n++
		}
	}
	return n
}

// narrate tells events to an --all tracker: its narratives by local, remote.
func narrate(events []wire.Event) []tracker.Narrative {
	var out []tracker.Narrative
	tr := tracker.New(tracker.Config{All: true}, func(n *tracker.Narrative) {
		c := *n
		c.Timeline = slices.Clone(n.Timeline)
		out = append(out, c)
	})
	var last time.Duration
	for i := range events {
		tr.Handle(&events[i])
		last = max(last, events[i].Mono)
	}
	tr.Flush(last + time.Hour)
	slices.SortFunc(out, func(a, b tracker.Narrative) int {
		if a.Local != b.Local {
			return a.Local.Compare(b.Local)
		}
		return a.Remote.Compare(b.Remote)
	})
	return out
}
