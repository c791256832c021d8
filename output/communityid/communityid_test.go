package communityid

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

type vector struct {
	Proto       uint8   `json:"proto"`
	SAddr       string  `json:"saddr"`
	DAddr       string  `json:"daddr"`
	SPort       *uint16 `json:"sport"`
	DPort       *uint16 `json:"dport"`
	CommunityID string  `json:"communityid"`
}

// TestBaseline checks every port-based flow of the specification's
// published baseline (testdata/README.md), both seeds.
func TestBaseline(t *testing.T) {
	for _, c := range []struct {
		file string
		seed uint16
	}{{"baseline_deflt.json", 0}, {"baseline_seed1.json", 1}} {
		raw, err := os.ReadFile(filepath.Join("testdata", c.file))
		if err != nil {
			t.Fatal(err)
		}
		var vs []vector
		if err := json.Unmarshal(raw, &vs); err != nil {
			t.Fatal(err)
		}
		checked := map[uint8]int{}
		for _, v := range vs {
			if v.Proto != TCP && v.Proto != UDP && v.Proto != SCTP {
				continue // ICMP's type/code mapping and portless protocols: not ours
			}
			a := netip.AddrPortFrom(netip.MustParseAddr(v.SAddr), *v.SPort)
			b := netip.AddrPortFrom(netip.MustParseAddr(v.DAddr), *v.DPort)
			if got := Flow(c.seed, v.Proto, a, b); got != v.CommunityID {
				t.Errorf("%s: proto %d %v -> %v: got %s, want %s", c.file, v.Proto, a, b, got, v.CommunityID)
			}
			checked[v.Proto]++
		}
		// The baseline has TCP over IPv4 and IPv6, UDP and SCTP, in both
		// directions: make sure none of them went unchecked.
		if checked[TCP] < 4 || checked[UDP] < 2 || checked[SCTP] < 2 {
			t.Errorf("%s: checked %v flows by protocol, want at least 4 TCP, 2 UDP, 2 SCTP", c.file, checked)
		}
	}
}

// TestREADMEExample is the spec README's first table row, and its reverse.
func TestREADMEExample(t *testing.T) {
	a, b := netip.MustParseAddrPort("1.2.3.4:1122"), netip.MustParseAddrPort("5.6.7.8:3344")
	const want = "1:wCb3OG7yAFWelaUydu0D+125CLM="
	if got := Flow(0, TCP, a, b); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got := Flow(0, TCP, b, a); got != want {
		t.Errorf("reversed: got %s, want %s", got, want)
	}
}

// A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; the wire,
// and every other tool, sees IPv4.
func TestMappedIsIPv4(t *testing.T) {
	a, b := netip.MustParseAddrPort("[::ffff:1.2.3.4]:1122"), netip.MustParseAddrPort("[::ffff:5.6.7.8]:3344")
	if got, want := Flow(0, TCP, a, b), "1:wCb3OG7yAFWelaUydu0D+125CLM="; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got := Flow(0, TCP, netip.AddrPort{}, b); got != "" {
		t.Errorf("no address: got %q, want \"\"", got)
	}
}

func BenchmarkFlow(b *testing.B) {
	x, y := netip.MustParseAddrPort("[2001:db8::1]:443"), netip.MustParseAddrPort("[2001:db8::2]:51234")
	for b.Loop() {
		Flow(0, TCP, x, y)
	}
}

// The cache gives what Flow gives, for either direction of a flow, for
// flows that share a slot (the same ports, other addresses) and seeds.
func TestCacheIsFlow(t *testing.T) {
	var c Cache
	var flows [][2]netip.AddrPort
	for i := range 600 {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(1000+i%7))
		b := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i % 3)}), uint16(80+i%5))
		flows = append(flows, [2]netip.AddrPort{a, b})
		// One side the same, the other's address alone differs.
		flows = append(flows, [2]netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 80),
			netip.MustParseAddrPort("10.3.0.1:5000")})
	}
	flows = append(flows, [2]netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:443"), netip.MustParseAddrPort("[2001:db8::2]:443")},
		[2]netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:443"), netip.MustParseAddrPort("[2001:db8::2]:443")})
	for round := range 3 {
		for _, seed := range []uint16{0, 1} {
			for _, f := range flows {
				for _, dir := range [][2]netip.AddrPort{{f[0], f[1]}, {f[1], f[0]}} {
					want := Flow(seed, TCP, dir[0], dir[1])
					if got := string(c.AppendFlow([]byte("x"), seed, TCP, dir[0], dir[1])); got != "x"+want {
						t.Fatalf("round %d: %v -> %v seed %d: %q, want %q", round, dir[0], dir[1], seed, got, "x"+want)
					}
				}
			}
		}
	}
}
