package pipeline

import (
	"net/netip"
	"testing"
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
		if got := tc.f.Match(tc.netns, tc.local, tc.remote, tc.pid, tc.comm); got != tc.want {
			t.Errorf("%+v Match(%d, %v, %v, %d, %q) = %v", tc.f, tc.netns, tc.local, tc.remote, tc.pid, tc.comm, got)
		}
	}
}
