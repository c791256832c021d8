// Package communityid computes the Community ID flow hash
// (https://github.com/corelight/community-id-spec, version 1): the string
// Zeek, Suricata, Elastic and others put on their flow records, so that
// records of one connection from different tools, or from both of its
// ends, join on one field.
package communityid

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers the hash takes (port-based protocols only: ICMP's
// type/code mapping is not needed by tcpwatch).
const (
	TCP  = 6
	UDP  = 17
	SCTP = 132
)

// Flow is the version 1 Community ID of a port-based flow between a and
// b, the same whichever end is a. seed separates domains of use (0 unless
// both sides agree on another). IPv4-mapped IPv6 addresses are taken as
// the IPv4 addresses the packets carry. An invalid address, or a v4/v6
// mix, gives "" (the spec's "no id").
func Flow(seed uint16, proto uint8, a, b netip.AddrPort) string {
	return string(appendFlow(nil, seed, proto, a, b))
}

// appendFlow appends Flow's ID to dst (nothing where Flow gives "").
func appendFlow(dst []byte, seed uint16, proto uint8, a, b netip.AddrPort) []byte {
	aa, ba := a.Addr().Unmap(), b.Addr().Unmap()
	if !aa.IsValid() || !ba.IsValid() || aa.Is4() != ba.Is4() {
		return dst
	}
	// The numerically smaller address:port goes first, so both
	// directions hash the same.
	if c := aa.Compare(ba); c > 0 || (c == 0 && a.Port() > b.Port()) {
		a, b, aa, ba = b, a, ba, aa
	}
	var buf [2 + 16 + 16 + 2 + 4]byte
	in := binary.BigEndian.AppendUint16(buf[:0], seed)
	in = append(in, aa.AsSlice()...)
	in = append(in, ba.AsSlice()...)
	in = append(in, proto, 0)
	in = binary.BigEndian.AppendUint16(in, a.Port())
	in = binary.BigEndian.AppendUint16(in, b.Port())
	sum := sha1.Sum(in)
	return base64.StdEncoding.AppendEncode(append(dst, "1:"...), sum[:])
}

// Len is the length of every Community ID Flow returns (other than "").
const Len = 30

// Cache remembers the Community IDs of the flows it was asked about
// lately, each under its two directions: a connection between two
// namespaces or sockets of one host is told from both ends, and with
// --all each end's line and a notice of TIME_WAIT reuse carry its ID,
// a SHA-1 each. A zero Cache is ready; not safe for concurrent use.
type Cache struct {
	slots [cacheSlots]cacheSlot
}

const cacheSlots = 256

type cacheSlot struct {
	seed  uint16
	proto uint8
	a, b  netip.AddrPort
	id    [Len]byte
	ok    bool
}

// AppendFlow appends Flow(seed, proto, a, b) to dst.
func (c *Cache) AppendFlow(dst []byte, seed uint16, proto uint8, a, b netip.AddrPort) []byte {
	if a.Port() > b.Port() || a.Port() == b.Port() && a.Addr().Less(b.Addr()) {
		a, b = b, a // either direction, one slot
	}
	i := (uint(a.Port())*31 + uint(b.Port())) % cacheSlots
	s := &c.slots[i]
	if s.ok && s.a == a && s.b == b && s.seed == seed && s.proto == proto {
		return append(dst, s.id[:]...)
	}
	start := len(dst)
	dst = appendFlow(dst, seed, proto, a, b)
	if len(dst)-start == Len {
		*s = cacheSlot{seed: seed, proto: proto, a: a, b: b, ok: true}
		copy(s.id[:], dst[start:])
	}
	return dst
}
