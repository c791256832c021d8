package main

import (
	"net/netip"
	"testing"
)

func TestUserFilter(t *testing.T) {
	v4 := netip.MustParseAddr("10.1.2.3")
	other := netip.MustParseAddr("192.0.2.9")
	v6 := netip.MustParseAddr("fd00::5")
	mapped := netip.MustParseAddr("::ffff:10.1.2.3")
	prefix, err := parsePrefix("10.1.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	single, err := parsePrefix("fd00::5")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f             userFilter
		comm          string
		local, remote netip.Addr
		want          bool
	}{
		{userFilter{}, "curl", other, other, true},
		{userFilter{comm: "curl"}, "curl", other, other, true},
		{userFilter{comm: "curl"}, "wget", other, other, false},
		{userFilter{addr: prefix}, "", v4, other, true},
		{userFilter{addr: prefix}, "", other, v4, true},
		{userFilter{addr: prefix}, "", other, mapped, true},
		{userFilter{addr: prefix}, "", other, other, false},
		{userFilter{addr: single}, "", v6, other, true},
		{userFilter{addr: single, comm: "x"}, "y", v6, other, false},
	} {
		if got := tc.f.match(1, tc.comm, tc.local, tc.remote); got != tc.want {
			t.Errorf("%+v match(%q, %v, %v) = %v", tc.f, tc.comm, tc.local, tc.remote, got)
		}
	}
	if _, err := parsePrefix("10.1.0.0/99"); err == nil {
		t.Error("a bad prefix was accepted")
	}
}
