// Package hosts builds throw-away networks for privileged tests: hosts
// (network namespaces) joined by a cable, connections between them; all
// of it is removed when the test ends.
package hosts

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/lab/netlab"
)

// Pair returns two hosts with these names joined by a cable; the first
// gets the cable's first addresses.
func Pair(tb testing.TB, first, second string) (a, b *netlab.Host) {
	tb.Helper()
	l, err := netlab.New()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("closing the lab: %v", err)
		}
	})
	if a, err = l.AddHost(first); err != nil {
		tb.Fatal(err)
	}
	if b, err = l.AddHost(second); err != nil {
		tb.Fatal(err)
	}
	if _, err := l.Cable(a, b, netlab.CableOptions{}); err != nil {
		tb.Fatal(err)
	}
	return a, b
}

// Connect makes a connection from a to a listener on b's port and
// returns both ends, closed when the test ends.
func Connect(tb testing.TB, a, b *netlab.Host, port int) (client, server *net.TCPConn) {
	tb.Helper()
	return ConnectTo(tb, a, b, b.Addr4(), port, net.ListenConfig{})
}

// ConnectTo makes a connection from a to a listener that lc opens on b at
// dst (one of b's addresses, IPv4 or IPv6) and port, and returns both
// ends, closed when the test ends.
func ConnectTo(tb testing.TB, a, b *netlab.Host, dst netip.Addr, port int, lc net.ListenConfig) (client, server *net.TCPConn) {
	tb.Helper()
	var ln net.Listener
	addr := netip.AddrPortFrom(dst, uint16(port)).String()
	if err := b.Do(func() (err error) { ln, err = lc.Listen(context.Background(), "tcp", addr); return err }); err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	var c net.Conn
	if err := a.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
		tb.Fatal(err)
	}
	s, ok := <-accepted
	if !ok {
		c.Close()
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// Family is one of a host's address families, for a test run once per
// family.
type Family struct {
	Name string // "v4" or "v6", a subtest's name
	Addr netip.Addr
}

// Families are h's IPv4 and IPv6 addresses.
func Families(h *netlab.Host) []Family {
	return []Family{{"v4", h.Addr4()}, {"v6", h.Addr6()}}
}

// Netns is h's network namespace as tcpwatch names it: the inode.
func Netns(tb testing.TB, h *netlab.Host) uint32 {
	tb.Helper()
	var st unix.Stat_t
	if err := unix.Stat(h.NetnsPath(), &st); err != nil {
		tb.Fatal(err)
	}
	return uint32(st.Ino)
}
