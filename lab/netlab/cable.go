//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CableOptions tunes a cable. The zero value is an ordinary 1500-byte
// Ethernet.
type CableOptions struct {
	// MTU of both hosts' interfaces; 0 means 1500. Handy for path-MTU
	// scenarios on a Router's second cable.
	MTU int
}

// Cable is a point-to-point Ethernet link between two hosts, made of a veth
// per host and a bridge in the lab's wire namespace (see the package
// documentation for why).
type Cable struct {
	lab    *Lab
	n      int
	bridge string // bridge name in the wire namespace
	mtu    int
	ends   [2]*end
	pulled bool // guarded by lab.mu
}

// end is one host's side of a cable.
type end struct {
	cable  *Cable
	host   *Host
	ifname string // the host's interface, eth<i>
	port   string // the veth's other end, a bridge port in the wire
	mac    net.HardwareAddr
	addr4  netip.Prefix
	addr6  netip.Prefix
}

const maxCables = 511 // subnets of 198.18.0.0/15, 0 unused

// Cable connects a and b. Both get an interface with an IPv4 /24 and an IPv6
// /64 address that are usable as soon as Cable returns (IPv6 without
// duplicate address detection), and a connected route to each other.
func (l *Lab) Cable(a, b *Host, opt CableOptions) (*Cable, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cable(a, b, opt)
}

func (l *Lab) cable(a, b *Host, opt CableOptions) (*Cable, error) {
	if l.closed {
		return nil, errClosed
	}
	if a == nil || b == nil || a.lab != l || b.lab != l || a == b {
		return nil, errors.New("netlab: a cable needs two different hosts of this lab")
	}
	if len(l.cables) >= maxCables {
		return nil, errors.New("netlab: too many cables")
	}
	if opt.MTU == 0 {
		opt.MTU = 1500
	}
	n := len(l.cables) + 1
	c := &Cable{lab: l, n: n, bridge: fmt.Sprintf("br%d", n), mtu: opt.MTU}
	for i, h := range []*Host{a, b} {
		host := byte(i + 1)
		c.ends[i] = &end{
			cable:  c,
			host:   h,
			ifname: fmt.Sprintf("eth%d", len(h.ends)),
			port:   fmt.Sprintf("c%d%c", n, 'a'+i),
			// Locally administered and fixed for the cable's life: a rebooted
			// host keeps its MAC, as a real NIC would, so peers' neighbour
			// caches stay right.
			mac:   net.HardwareAddr{0x02, 't', 'w', byte(n >> 8), byte(n), host},
			addr4: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(n>>8), byte(n), host}), 24),
			addr6: netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, byte(n >> 8), byte(n), 15: host}), 64),
		}
	}

	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: c.bridge, MTU: opt.MTU}, MulticastSnooping: ptr(false)}
	if err := l.wire.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("netlab: creating bridge %s: %w", c.bridge, err)
	}
	fail := func(err error) (*Cable, error) {
		for _, e := range c.ends {
			if link, lerr := l.wire.LinkByName(e.port); lerr == nil {
				l.wire.LinkDel(link)
			}
		}
		if link, lerr := l.wire.LinkByName(c.bridge); lerr == nil {
			l.wire.LinkDel(link)
		}
		return nil, err
	}
	if err := l.wire.LinkSetUp(br); err != nil {
		return fail(fmt.Errorf("netlab: %s up: %w", c.bridge, err))
	}
	for _, e := range c.ends {
		if err := l.attach(e); err != nil {
			return fail(err)
		}
	}
	a.ends = append(a.ends, c.ends[0])
	b.ends = append(b.ends, c.ends[1])
	l.cables = append(l.cables, c)
	return c, nil
}

func ptr[T any](v T) *T { return &v }

// attach creates e's veth pair (the host side directly in the host's
// namespace, so the host's namespace of origin never sees it), configures the
// host side and plugs the wire side into the cable's bridge.
func (l *Lab) attach(e *end) error {
	h, c := e.host, e.cable
	fd, err := unix.Open(h.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netlab: %w", err)
	}
	defer unix.Close(fd)
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: e.port, MTU: c.mtu},
		PeerName:         e.ifname,
		PeerHardwareAddr: e.mac,
		PeerNamespace:    netlink.NsFd(fd),
		PeerMTU:          uint32(c.mtu),
	}
	if err := l.wire.LinkAdd(veth); err != nil {
		return fmt.Errorf("netlab: creating veth %s/%s for %s: %w", e.port, e.ifname, h.name, err)
	}
	link, err := h.nl.LinkByName(e.ifname)
	if err != nil {
		return fmt.Errorf("netlab: %s: %w", h.name, err)
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("netlab: %s: %s up: %w", h.name, e.ifname, err)
	}
	for _, p := range []netip.Prefix{e.addr4, e.addr6} {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.nl.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("netlab: %s: adding %s to %s: %w", h.name, p, e.ifname, err)
		}
	}
	port, err := l.wire.LinkByName(e.port)
	if err != nil {
		return fmt.Errorf("netlab: wire: %w", err)
	}
	br, err := l.wire.LinkByName(c.bridge)
	if err != nil {
		return fmt.Errorf("netlab: wire: %w", err)
	}
	if err := l.wire.LinkSetMaster(port, br); err != nil {
		return fmt.Errorf("netlab: wire: enslaving %s: %w", e.port, err)
	}
	if !c.pulled {
		if err := l.wire.LinkSetUp(port); err != nil {
			return fmt.Errorf("netlab: wire: %s up: %w", e.port, err)
		}
	}
	return nil
}

// Pull unplugs the cable. Both wire ports go down, so each host's interface
// loses carrier (NO-CARRIER: IFF_LOWER_UP cleared, operstate DOWN) while it
// stays administratively UP with its addresses and routes. What a host's kernel then
// does is what it does on a real unplug: frames it sends are dropped at the
// interface without any error reaching TCP, its neighbour entries on that
// interface are flushed, and the next packet to the peer starts ARP/neighbour
// discovery, which fails after its probes (about 3 s by default) and turns
// into EHOSTUNREACH for whatever waited on it.
func (c *Cable) Pull() error { return c.setPlugged(false) }

// Plug puts the cable back. Carrier returns on both sides; addresses never
// left, and IPv6 ones need no new duplicate address detection, so traffic
// flows again as soon as neighbour discovery succeeds.
func (c *Cable) Plug() error { return c.setPlugged(true) }

func (c *Cable) setPlugged(up bool) error {
	l := c.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	var errs []error
	for _, e := range c.ends {
		link, err := l.wire.LinkByName(e.port)
		if err == nil {
			if up {
				err = l.wire.LinkSetUp(link)
			} else {
				err = l.wire.LinkSetDown(link)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("netlab: cable %d: %s: %w", c.n, e.port, err))
		}
	}
	c.pulled = !up
	return errors.Join(errs...)
}

// Interface is the name of h's interface on this cable ("eth0", ...).
func (c *Cable) Interface(h *Host) string {
	if e := c.end(h); e != nil {
		return e.ifname
	}
	return ""
}

// Addr4 is h's IPv4 address on this cable (zero if h is not on it).
func (c *Cable) Addr4(h *Host) netip.Addr {
	if e := c.end(h); e != nil {
		return e.addr4.Addr()
	}
	return netip.Addr{}
}

// Addr6 is h's IPv6 address on this cable (zero if h is not on it).
func (c *Cable) Addr6(h *Host) netip.Addr {
	if e := c.end(h); e != nil {
		return e.addr6.Addr()
	}
	return netip.Addr{}
}

func (c *Cable) end(h *Host) *end {
	for _, e := range c.ends {
		if e.host == h {
			return e
		}
	}
	return nil
}
