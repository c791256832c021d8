package engine

import (
	"net/netip"
	"testing"

	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

func TestFilter(t *testing.T) {
	ap := func(a string, port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(a), port) }
	v4, other := ap("10.1.2.3", 80), ap("192.0.2.9", 40000)
	v6, mapped := ap("fd00::5", 443), ap("::ffff:10.1.2.3", 80)
	prefix := netip.MustParsePrefix("10.1.0.0/16")
	single := netip.MustParsePrefix("fd00::5/128")
	for _, tc := range []struct {
		f             Filter
		netns, pid    uint32
		comm          string
		local, remote netip.AddrPort
		want          bool
	}{
		{Filter{}, 1, 7, "curl", other, other, true},
		{Filter{Comm: "curl"}, 1, 7, "curl", other, other, true},
		{Filter{Comm: "curl"}, 1, 7, "wget", other, other, false},
		{Filter{Addr: prefix}, 1, 7, "", v4, other, true},
		{Filter{Addr: prefix}, 1, 7, "", other, v4, true},
		{Filter{Addr: prefix}, 1, 7, "", other, mapped, true},
		{Filter{Addr: prefix}, 1, 7, "", other, other, false},
		{Filter{Addr: single}, 1, 7, "", v6, other, true},
		{Filter{Addr: single, Comm: "x"}, 1, 7, "y", v6, other, false},
		{Filter{PID: 7}, 1, 7, "", other, other, true},
		{Filter{PID: 8}, 1, 7, "", other, other, false},
		{Filter{PID: 8}, 1, 0, "", other, other, false}, // an unknown owner is not pid 8
		{Filter{Port: 80}, 1, 7, "", other, v4, true},
		{Filter{Port: 81}, 1, 7, "", other, v4, false},
		{Filter{NetNS: 2}, 1, 7, "", other, v4, false},
		{Filter{NetNS: 1}, 1, 7, "", other, v4, true},
	} {
		owner := tracker.Owner{PID: tc.pid, Comm: tc.comm}
		ev := wire.Event{NetNS: tc.netns, Local: tc.local, Remote: tc.remote, PID: tc.pid}
		ev.SetComm(tc.comm)
		// A narrative, a notice and an event about the same connection
		// are kept or dropped alike.
		for _, it := range []Item{
			{Narrative: &tracker.Narrative{NetNS: tc.netns, Local: tc.local, Remote: tc.remote, Owner: owner}},
			{Notice: &tracker.Notice{NetNS: tc.netns, Local: tc.local, Remote: tc.remote, Owner: owner}},
			{Event: &ev},
		} {
			if got := tc.f.Match(&it); got != tc.want {
				t.Errorf("%+v Match(%d, %v, %v, %d, %q) = %v", tc.f, tc.netns, tc.local, tc.remote, tc.pid, tc.comm, got)
			}
		}
	}
	if !(&Filter{PID: 8, Container: "0123"}).Match(&Item{Loss: &Loss{Total: 1, New: 1}}) {
		t.Error("a loss report was filtered out")
	}
	in := Item{Narrative: &tracker.Narrative{}, Cgroup: containers.Parse("/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope")}
	if !(&Filter{Container: "0123"}).Match(&in) || (&Filter{Container: "0124"}).Match(&in) {
		t.Error("Match does not decide the container on the item's cgroup")
	}
}
