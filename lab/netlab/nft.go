//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Blackhole makes every IP packet between h and peer vanish, both ways,
// without any ICMP error: what a host sees when a firewall or a broken path
// eats its traffic. The drop happens in the wire, on h's bridge ports, so
// neither host's kernel records a local drop or returns an error to a sender;
// TCP just retransmits until it gives up. ARP, and for IPv6 neighbour and
// router discovery, still pass, so both hosts keep resolving each other the
// whole time, exactly as when the drop is further away; pull the cable for a
// peer that is gone altogether. For a peer behind a Router, call Blackhole on
// the router to make the path drop.
//
// The rule covers h's cables as they are now, and stays when h reboots (it is
// in the network, not in h). undo removes it.
func (h *Host) Blackhole(peer netip.Addr) (undo func() error, err error) {
	l := h.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	peer = peer.Unmap()
	if !peer.IsValid() {
		return nil, errors.New("netlab: Blackhole needs a valid peer address")
	}
	if len(h.ends) == 0 {
		return nil, fmt.Errorf("netlab: Blackhole: host %s has no cable", h.name)
	}
	proto, saddr, daddr := uint16(unix.ETH_P_IP), uint32(12), uint32(16)
	if peer.Is6() {
		proto, saddr, daddr = unix.ETH_P_IPV6, 8, 24
	}
	l.nftSeq++
	table := &nftables.Table{Name: fmt.Sprintf("blackhole%d", l.nftSeq), Family: nftables.TableFamilyBridge}
	err = withNft(l.nsPath(wireName), func(c *nftables.Conn) error {
		c.AddTable(table)
		ch := c.AddChain(&nftables.Chain{
			Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
		})
		if peer.Is6() {
			// Keep neighbour discovery (ICMPv6 133-137) working, as ARP does for IPv4.
			c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(proto)},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: []byte{133}},
				&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: []byte{137}},
				&expr.Verdict{Kind: expr.VerdictAccept},
			}})
		}
		for _, e := range h.ends {
			// Frames from h enter the wire on its port; frames to h leave by it.
			for _, m := range []struct {
				dir expr.MetaKey
				off uint32
			}{{expr.MetaKeyIIFNAME, daddr}, {expr.MetaKeyOIFNAME, saddr}} {
				c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: []expr.Any{
					&expr.Meta{Key: m.dir, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(e.port)},
					&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(proto)},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: m.off, Len: uint32(peer.BitLen() / 8)},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: peer.AsSlice()},
					&expr.Verdict{Kind: expr.VerdictDrop},
				}})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: Blackhole %s on %s: %w", peer, h.name, err)
	}
	return l.undoFunc(func() bool { return true }, func() error {
		return withNft(l.nsPath(wireName), func(c *nftables.Conn) error {
			c.DelTable(table)
			return nil
		})
	}), nil
}

// DropPort silently drops TCP segments to or from local port port as they
// arrive in h (the prerouting hook, before conntrack), so no sender ever gets
// a local error. On loopback, where every segment is sent and then arrives,
// this silences both directions of a connection; on a cable it silences what
// comes in, while h's own segments still leave. The rule is part of h's state,
// so Reboot removes it; undo removes it earlier.
func (h *Host) DropPort(port uint16) (undo func() error, err error) {
	l := h.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	l.nftSeq++
	gen := h.gen
	table := &nftables.Table{Name: fmt.Sprintf("dropport%d", l.nftSeq), Family: nftables.TableFamilyINet}
	err = withNft(h.path, func(c *nftables.Conn) error {
		c.AddTable(table)
		ch := c.AddChain(&nftables.Chain{
			Name: "prerouting", Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw,
		})
		for _, off := range []uint32{0, 2} { // source port, destination port
			c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: DropPort %d on %s: %w", port, h.name, err)
	}
	return l.undoFunc(func() bool { return h.gen == gen }, func() error {
		return withNft(h.path, func(c *nftables.Conn) error {
			c.DelTable(table)
			return nil
		})
	}), nil
}

// withNft gives fn an nftables connection whose netlink socket lives in the
// namespace at nsPath, then commits what fn queued as one transaction.
func withNft(nsPath string, fn func(c *nftables.Conn) error) error {
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	c, err := nftables.New(nftables.WithNetNSFd(fd), nftables.AsLasting())
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	if err := fn(c); err != nil {
		return err
	}
	return c.Flush()
}

// ifname is an interface name as nftables compares it: NUL-padded to IFNAMSIZ.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// Lossy makes the cable drop the given percentage of IP packets at random,
// both ways (ARP and neighbour discovery pass): a bad link, for tests and
// benchmarks of retransmission under steady loss. undo removes it.
func (c *Cable) Lossy(percent int) (undo func() error, err error) {
	l := c.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	if percent < 1 || percent > 99 {
		return nil, fmt.Errorf("netlab: Lossy wants a percentage from 1 to 99, not %d", percent)
	}
	l.nftSeq++
	table := &nftables.Table{Name: fmt.Sprintf("lossy%d", l.nftSeq), Family: nftables.TableFamilyBridge}
	err = withNft(l.nsPath(wireName), func(nc *nftables.Conn) error {
		nc.AddTable(table)
		ch := nc.AddChain(&nftables.Chain{
			Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
		})
		for _, proto := range []uint16{unix.ETH_P_IP, unix.ETH_P_IPV6} {
			for _, e := range c.ends {
				nc.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(e.port)},
					&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(proto)},
					&expr.Numgen{Register: 1, Modulus: 100, Type: unix.NFT_NG_RANDOM},
					// numgen yields host order; "<" compares bytes, so make it big-endian first (as nft does).
					&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
					&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: binaryutil.BigEndian.PutUint32(uint32(percent))},
					&expr.Verdict{Kind: expr.VerdictDrop},
				}})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: Lossy %d%%: %w", percent, err)
	}
	return l.undoFunc(func() bool { return true }, func() error {
		return withNft(l.nsPath(wireName), func(nc *nftables.Conn) error {
			nc.DelTable(table)
			return nil
		})
	}), nil
}

// DropTo makes h's own firewall drop every IP packet h sends to peer, in
// its OUTPUT chain (inet filter): the kernel that sends is the one that
// drops, so the sender's TCP sees a local failure (EPERM) and
// kfree_skb(NETFILTER_DROP), never a lost packet on the wire. The rule is
// part of h's state, so Reboot removes it; undo removes it earlier.
func (h *Host) DropTo(peer netip.Addr) (undo func() error, err error) {
	return h.firewallDrop("dropto", nftables.ChainHookOutput, peer, false, false)
}

// DropFrom makes h's own firewall drop every IP packet from peer in its
// INPUT chain (inet filter): the peer's answers arrive and die here, the
// asymmetric firewall. Reboot or undo removes the rule.
func (h *Host) DropFrom(peer netip.Addr) (undo func() error, err error) {
	return h.firewallDrop("dropfrom", nftables.ChainHookInput, peer, true, false)
}

// DropTCPFrom is DropFrom for TCP segments only: ARP, ICMP and IPv6
// neighbour discovery from peer still pass, so h can still resolve peer
// and send to it before any connection exists (a client whose SYN-ACKs
// die on arrival).
func (h *Host) DropTCPFrom(peer netip.Addr) (undo func() error, err error) {
	return h.firewallDrop("droptcpfrom", nftables.ChainHookInput, peer, true, true)
}

func (h *Host) firewallDrop(name string, hook *nftables.ChainHook, peer netip.Addr, source, tcpOnly bool) (undo func() error, err error) {
	l := h.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	peer = peer.Unmap()
	if !peer.IsValid() {
		return nil, fmt.Errorf("netlab: %s needs a valid peer address", name)
	}
	nfproto, off := byte(unix.NFPROTO_IPV4), uint32(16)
	if source {
		off = 12
	}
	if peer.Is6() {
		nfproto, off = unix.NFPROTO_IPV6, 24
		if source {
			off = 8
		}
	}
	l.nftSeq++
	gen := h.gen
	table := &nftables.Table{Name: fmt.Sprintf("%s%d", name, l.nftSeq), Family: nftables.TableFamilyINet}
	err = withNft(h.path, func(c *nftables.Conn) error {
		c.AddTable(table)
		ch := c.AddChain(&nftables.Chain{
			Name: name, Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityFilter,
		})
		match := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(peer.BitLen() / 8)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: peer.AsSlice()},
		}
		if tcpOnly {
			match = append(match,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}})
		}
		c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: append(match, &expr.Verdict{Kind: expr.VerdictDrop})})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: %s %s on %s: %w", name, peer, h.name, err)
	}
	return l.undoFunc(func() bool { return h.gen == gen }, func() error {
		return withNft(h.path, func(c *nftables.Conn) error {
			c.DelTable(table)
			return nil
		})
	}), nil
}
