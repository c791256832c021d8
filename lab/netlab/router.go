//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Router adds a host named name with one new cable to a and one to b,
// forwards IPv4 and IPv6 between them, and gives a and b routes to each
// other's subnet on those cables through it. a then reaches b at
// b's address on the router-b cable, which is b.Addr4()/Addr6() when that
// is b's first cable. The routes are part of a's and b's configuration and
// survive their reboots.
func (l *Lab) Router(name string, a, b *Host) (*Host, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a == nil || b == nil || a == b {
		return nil, errors.New("netlab: Router needs two different hosts")
	}
	r, err := l.addHost(name)
	if err != nil {
		return nil, err
	}
	ca, err := l.cable(a, r, CableOptions{})
	if err != nil {
		return nil, err
	}
	cb, err := l.cable(r, b, CableOptions{})
	if err != nil {
		return nil, err
	}
	for _, kv := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv6/conf/all/forwarding", "1"},
	} {
		if err := r.Do(func() error { return writeSysctl(kv[0], kv[1]) }); err != nil {
			return nil, fmt.Errorf("netlab: router %s: %w", name, err)
		}
		r.sysctls = append(r.sysctls, kv)
	}
	for _, rt := range []struct {
		h       *Host
		dst, gw *end
	}{{a, cb.ends[1], ca.ends[1]}, {b, ca.ends[0], cb.ends[0]}} {
		for _, r := range []route{
			{dst: rt.dst.addr4.Masked(), gw: rt.gw.addr4.Addr()},
			{dst: rt.dst.addr6.Masked(), gw: rt.gw.addr6.Addr()},
		} {
			if err := rt.h.applyRoute(r); err != nil {
				return nil, err
			}
			rt.h.routes = append(rt.h.routes, r)
		}
	}
	return r, nil
}

// RouteUnreachable installs an "unreachable" route for dst on h, normally a
// Router. Packets h must forward to dst are answered with ICMP
// destination-unreachable: for IPv4 code host-unreachable, which a connecting
// peer sees as EHOSTUNREACH; for IPv6 the kernel's code for unreachable routes
// is no-route (0), which a peer sees as ENETUNREACH. Programs on h itself get
// the error straight from the route lookup.
//
// Timing in this lab: veth delivers in the sender's own softirq, so the
// router's answer to a SYN arrives while connect() still holds the socket
// lock, and TcpExtLockDroppedIcmps counts it. An IPv4 connect still fails at
// once; an IPv6 one keeps the error as a soft error and fails only when its
// retransmitted SYN draws the next ICMPv6, about 1 s later. The route is state, not
// configuration: Reboot drops it; undo removes it earlier.
func (h *Host) RouteUnreachable(dst netip.Addr) (undo func() error, err error) {
	l := h.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	dst = dst.Unmap()
	if !dst.IsValid() {
		return nil, errors.New("netlab: RouteUnreachable needs a valid address")
	}
	rt := &netlink.Route{Dst: prefixToIPNet(netip.PrefixFrom(dst, dst.BitLen())), Type: unix.RTN_UNREACHABLE}
	if err := h.nl.RouteAdd(rt); err != nil {
		return nil, fmt.Errorf("netlab: %s: unreachable route to %s: %w", h.name, dst, err)
	}
	gen := h.gen
	return l.undoFunc(func() bool { return h.gen == gen }, func() error {
		if err := h.nl.RouteDel(rt); err != nil {
			return fmt.Errorf("netlab: %s: removing unreachable route to %s: %w", h.name, dst, err)
		}
		return nil
	}), nil
}
