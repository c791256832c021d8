package tracker

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// A window-probe stall whose kill never reached tcpwatch (a real run of the
// lab, testdata/firewall-drops-own-end-unseen.hex): past the kernel's
// deadline the tracker asks for the socket table instead of telling
// recovered, and the table decides.
func TestEndUnseenAfterDeadline(t *testing.T) {
	rec := loadRecording(t, "firewall-drops-own-end-unseen")
	for _, tc := range []struct {
		name  string
		alive bool
		want  Verdict
	}{{"gone", false, RetransmitTimeout}, {"alive", true, Recovered}} {
		t.Run(tc.name, func(t *testing.T) {
			var got []Narrative
			tr := New(Config{ResetReasons: testReasons, DropsSeen: true, DropReasons: testDropReasons}, func(n *Narrative) {
				if rec.hostOf[n.NetNS] == "A" {
					got = append(got, *n)
				}
			})
			var last time.Duration
			for i := range rec.events {
				tr.Handle(&rec.events[i])
				last = rec.events[i].Mono
			}
			// Well past the kill (about 0.2 s after the last record) and the
			// probe timer's next expiry after it.
			now := last + 5*time.Second
			tr.Tick(now)
			if !tr.WantsReconcile() {
				t.Fatal("silent past the deadline, the tracker did not ask for the socket table")
			}
			if tr.WantsReconcile() {
				t.Error("WantsReconcile said yes twice for one silence")
			}
			for _, n := range got {
				if n.Verdict != Stalled {
					t.Fatalf("told %s before the socket table was read", n.Verdict)
				}
			}
			tr.Reconcile(now, now, func(uint32, uint64, netip.AddrPort, netip.AddrPort) bool { return tc.alive })
			tr.Tick(now + time.Second)
			if len(got) == 0 || got[len(got)-1].Verdict != tc.want {
				t.Fatalf("told %v, want %s last", verdictsOf(got), tc.want)
			}
			n := got[len(got)-1]
			switch tc.want {
			case RetransmitTimeout:
				if !n.Final || !n.EndUnseen || tcp.ErrnoName(n.Errno) != "ETIMEDOUT" || n.WindowProbes != 3 || n.LostRecords {
					t.Errorf("final=%v end_unseen=%v errno=%s window probes %d lost_records=%v", n.Final, n.EndUnseen, tcp.ErrnoName(n.Errno), n.WindowProbes, n.LostRecords)
				}
			case Recovered:
				if n.Final || n.EndUnseen || n.WindowProbes != 3 {
					t.Errorf("final=%v end_unseen=%v window probes %d", n.Final, n.EndUnseen, n.WindowProbes)
				}
			}
			// The hole no kernel counter saw is counted: once, and only
			// when the end was told unseen.
			if want := uint64(boolInt(tc.want == RetransmitTimeout)); tr.Stats().EndsAtDeadline != want {
				t.Errorf("ends at deadline %d, want %d", tr.Stats().EndsAtDeadline, want)
			}
		})
	}
}

// A keepalive kill none of whose records came (keepalive-dead's recording
// without them), then the owner's close of the dead socket: told as the
// kernel's keepalive_timeout when the close comes after the deadline, and
// not when it comes before (the owner closed a connection still probing).
func TestClosedAfterKeepaliveDeadline(t *testing.T) {
	rec := loadRecording(t, "keepalive-dead")
	var kept []wire.Event
	var kill *wire.Event
	for i := range rec.events {
		ev := rec.events[i]
		if rec.hostOf[ev.NetNS] == "A" && (ev.Kind == wire.KindSendReset || ev.Kind == wire.KindError ||
			ev.Kind == wire.KindState && ev.State == tcp.StateClose || ev.Flags&wire.FlagKeepaliveKill != 0) {
			if kill == nil && ev.Kind == wire.KindState {
				kill = &rec.events[i]
			}
			continue
		}
		kept = append(kept, ev)
	}
	if kill == nil {
		t.Fatal("the recording has no CLOSE of A's connection")
	}
	for _, tc := range []struct {
		name  string
		after time.Duration // the owner's close, after the kill
		want  bool          // a keepalive_timeout decided by the deadline
	}{{"after the deadline", 100 * time.Millisecond, true}, {"before the deadline", -600 * time.Millisecond, false}} {
		t.Run(tc.name, func(t *testing.T) {
			tr, told := trackerOfA(rec)
			for i := range kept {
				tr.Handle(&kept[i])
			}
			destroy := *kill
			destroy.Kind, destroy.Mono, destroy.SkErr = wire.KindDestroy, kill.Mono+tc.after, 0
			tr.Handle(&destroy)
			tr.Flush(destroy.Mono + time.Second)
			var final *Narrative
			for i := range *told {
				if (*told)[i].Final {
					final = &(*told)[i]
				}
			}
			if !tc.want {
				if final != nil && final.Verdict == KeepaliveTimeout {
					t.Errorf("closed before the deadline, told %s end_unseen=%v", final.Verdict, final.EndUnseen)
				}
				return
			}
			if final == nil || final.Verdict != KeepaliveTimeout || !final.EndUnseen || final.Probes != 3 || tcp.ErrnoName(final.Errno) != "ETIMEDOUT" {
				t.Fatalf("told %v; final %+v", verdictsOf(*told), final)
			}
		})
	}
}

// A retransmission timer's kill after a router's ICMP host unreachable,
// none of whose records came (a real run of the lab,
// testdata/router-unreachable-end-unseen.hex, as CI saw it too): the socket
// gone past the deadline is told as the kill's records would have told
// it, host_unreachable with the soft error the ICMP left, not as a plain
// retransmission timeout.
func TestUnseenKillKeepsTheRoutersError(t *testing.T) {
	rec := loadRecording(t, "router-unreachable-end-unseen")
	for _, ev := range rec.events {
		if rec.hostOf[ev.NetNS] == "A" && (ev.Kind == wire.KindError || ev.Kind == wire.KindState && ev.State == tcp.StateClose && ev.Remote.IsValid() && ev.Remote.Port() == 8080) {
			t.Fatalf("the recording has a record of A's kill: %v", ev.Kind)
		}
	}
	tr, told := trackerOfA(rec)
	for i := range rec.events {
		tr.Handle(&rec.events[i])
	}
	now := rec.events[len(rec.events)-1].Mono + 10*time.Second
	tr.Tick(now)
	if !tr.WantsReconcile() {
		t.Fatal("silent past the deadline, the tracker did not ask for the socket table")
	}
	tr.Reconcile(now, now, func(uint32, uint64, netip.AddrPort, netip.AddrPort) bool { return false })
	tr.Tick(now + time.Second)
	if len(*told) == 0 {
		t.Fatal("nothing told")
	}
	n := (*told)[len(*told)-1]
	if n.Verdict != HostUnreachable || !n.Final || !n.EndUnseen || tcp.ErrnoName(n.Errno) != "EHOSTUNREACH" {
		t.Fatalf("told %v; last: final=%v end_unseen=%v errno=%s", verdictsOf(*told), n.Final, n.EndUnseen, tcp.ErrnoName(n.Errno))
	}
	if got := tr.Stats().EndsAtDeadline; got != 1 {
		t.Errorf("ends at deadline %d, want 1", got)
	}
}

// A connect whose SYN timeout's CLOSE and error report never came
// (connect-timeout's recording without them): the application's close at
// the kernel's deadline is the kernel's connect_timeout, unseen; the same
// close before the deadline is the application's own (connect_abandoned).
func TestConnectClosedAfterSynDeadline(t *testing.T) {
	rec := loadRecording(t, "connect-timeout")
	for _, tc := range []struct {
		name  string
		shift time.Duration // the close, moved from where the kernel killed
		want  Verdict
	}{{"at the deadline", 0, ConnectTimeout}, {"before the deadline", -time.Second, ConnectAbandoned}} {
		t.Run(tc.name, func(t *testing.T) {
			tr, told := trackerOfA(rec)
			dropped := 0
			for i := range rec.events {
				ev := rec.events[i]
				if rec.hostOf[ev.NetNS] == "A" && ev.Cookie != 0 && (ev.Kind == wire.KindError || ev.Kind == wire.KindState && ev.State == tcp.StateClose) {
					dropped++
					continue
				}
				if rec.hostOf[ev.NetNS] == "A" && ev.Kind == wire.KindDestroy && ev.Remote.Port() == 8080 {
					ev.Mono += tc.shift
					ev.SkErr = 0 // connect() took the error
				}
				tr.Handle(&ev)
			}
			if dropped != 2 {
				t.Fatalf("dropped %d records of A's kill, want its CLOSE and its error report", dropped)
			}
			tr.Flush(rec.events[len(rec.events)-1].Mono + time.Second)
			if len(*told) == 0 {
				t.Fatal("nothing told")
			}
			n := (*told)[len(*told)-1]
			if n.Verdict != tc.want || n.EndUnseen != (tc.want == ConnectTimeout) {
				t.Fatalf("told %v, end_unseen=%v; want %s last", verdictsOf(*told), n.EndUnseen, tc.want)
			}
			if tc.want == ConnectTimeout && tcp.ErrnoName(n.Errno) != "ETIMEDOUT" {
				t.Errorf("errno %s, want ETIMEDOUT", tcp.ErrnoName(n.Errno))
			}
		})
	}
}

// trackerOfA is a default-mode tracker and what it tells of host A's
// connections in rec.
func trackerOfA(rec recording) (*Tracker, *[]Narrative) {
	var got []Narrative
	tr := New(Config{ResetReasons: testReasons}, func(n *Narrative) {
		if rec.hostOf[n.NetNS] == "A" {
			got = append(got, *n)
		}
	})
	return tr, &got
}
