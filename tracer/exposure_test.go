package tracer_test

import (
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/exposure"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// TestExposureReadsEachSocketsOwnSettings opens connections that differ
// only in what their programs set, in a namespace whose sysctls are not
// the defaults, and checks the iterator reads each socket's own values:
// what sock_diag cannot tell apart.
func TestExposureReadsEachSocketsOwnSettings(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := hosts.Pair(t, "a", "b")
	for k, v := range map[string]string{
		"net.ipv4.tcp_keepalive_time": "50", "net.ipv4.tcp_keepalive_intvl": "7",
		"net.ipv4.tcp_keepalive_probes": "4", "net.ipv4.tcp_retries2": "5",
	} {
		if err := a.Sysctl(k, v); err != nil {
			t.Fatal(err)
		}
	}
	var ln net.Listener
	if err := b.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(b.Addr4(), 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	setsockopt := func(level, opt, value int) func(string, string, syscall.RawConn) error {
		return func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, value) }); err != nil {
				return err
			}
			return serr
		}
	}
	dialers := map[string]*net.Dialer{
		"off":          {KeepAlive: -1},
		"go default":   {},
		"custom":       {KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 33 * time.Second, Interval: 4 * time.Second, Count: 3}},
		"user timeout": {KeepAlive: -1, Control: setsockopt(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 12345)},
		"sysctl":       {KeepAlive: -1, Control: setsockopt(unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)},
	}
	// IPv6 too: the iterator reads the v6 addresses.
	var ln6 net.Listener
	if err := b.Do(func() (err error) {
		ln6, err = net.Listen("tcp", netip.AddrPortFrom(b.Addr6(), 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	go func() {
		for {
			c, err := ln6.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	var c6 net.Conn
	if err := a.Do(func() (err error) {
		c6, err = (&net.Dialer{KeepAlive: -1}).Dial("tcp", ln6.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c6.Close()
	byPort := map[uint16]string{}
	for name, d := range dialers {
		var c net.Conn
		if err := a.Do(func() (err error) {
			c, err = d.Dial("tcp", ln.Addr().String())
			return err
		}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer c.Close()
		byPort[netip.MustParseAddrPort(c.LocalAddr().String()).Port()] = name
	}

	r, err := tracer.OpenSocketReader(false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var st unix.Stat_t
	if err := unix.Stat(a.NetnsPath(), &st); err != nil {
		t.Fatal(err)
	}
	socks, err := r.Read(uint32(st.Ino))
	if err != nil {
		t.Fatal(err)
	}
	tracer.ResolveOwners(socks, nil)
	s := func(d time.Duration) time.Duration { return d }
	type want struct {
		keepalive              bool
		idle, intvl            time.Duration
		count                  uint8
		from                   exposure.Source
		userTimeout            time.Duration
		idleDetect, sendDetect exposure.Detection
	}
	wants := map[string]want{
		"off": {false, s(50 * time.Second), 7 * time.Second, 4, exposure.FromSysctl, 0,
			exposure.Detection{Never: true, By: exposure.ByNothing}, exposure.Detection{After: 12600 * time.Millisecond, By: exposure.ByRetries2}},
		"go default": {true, 15 * time.Second, 15 * time.Second, 9, exposure.FromSocket, 0,
			exposure.Detection{After: 150 * time.Second, By: exposure.ByKeepalive}, exposure.Detection{After: 12600 * time.Millisecond, By: exposure.ByRetries2}},
		"custom": {true, 33 * time.Second, 4 * time.Second, 3, exposure.FromSocket, 0,
			exposure.Detection{After: 45 * time.Second, By: exposure.ByKeepalive}, exposure.Detection{After: 12600 * time.Millisecond, By: exposure.ByRetries2}},
		"user timeout": {false, 50 * time.Second, 7 * time.Second, 4, exposure.FromSysctl, 12345 * time.Millisecond,
			exposure.Detection{Never: true, By: exposure.ByNothing}, exposure.Detection{After: 12345 * time.Millisecond, By: exposure.ByUserTimeout}},
		"sysctl": {true, 50 * time.Second, 7 * time.Second, 4, exposure.FromSysctl, 0,
			exposure.Detection{After: 78 * time.Second, By: exposure.ByKeepalive}, exposure.Detection{After: 12600 * time.Millisecond, By: exposure.ByRetries2}},
	}
	seen := map[string]bool{}
	for i := range socks {
		sk := &socks[i]
		if sk.Local.String() == c6.LocalAddr().String() && sk.State == tcp.StateEstablished {
			seen["v6"] = true
			if sk.Remote.String() != ln6.Addr().String() || sk.Settings.Keepalive || sk.PID != uint32(unix.Getpid()) {
				t.Errorf("v6: %v -> %v keepalive %v pid %d", sk.Local, sk.Remote, sk.Settings.Keepalive, sk.PID)
			}
			continue
		}
		name, ok := byPort[sk.Local.Port()]
		if !ok || sk.State != tcp.StateEstablished {
			continue
		}
		seen[name] = true
		w, g := wants[name], sk.Settings
		if g.Keepalive != w.keepalive || g.KeepaliveIdle != w.idle || g.KeepaliveIntvl != w.intvl || g.KeepaliveCount != w.count ||
			g.KeepaliveIdleFrom != w.from || g.KeepaliveIntvlFrom != w.from || g.KeepaliveCountFrom != w.from || g.UserTimeout != w.userTimeout {
			t.Errorf("%s: read %+v, want keepalive=%v %v/%v/%d from %s, user timeout %v", name, g, w.keepalive, w.idle, w.intvl, w.count, w.from, w.userTimeout)
		}
		if g.Retries2 != 5 || g.NetKeepaliveIdle != 50*time.Second || g.NetKeepaliveCount != 4 {
			t.Errorf("%s: the namespace's sysctls read as retries2=%d keepalive_time=%v probes=%d", name, g.Retries2, g.NetKeepaliveIdle, g.NetKeepaliveCount)
		}
		if sk.PID != uint32(unix.Getpid()) || sk.Remote != netip.MustParseAddrPort(ln.Addr().String()) {
			t.Errorf("%s: owner %d %q, remote %v", name, sk.PID, sk.Comm, sk.Remote)
		}
		a := exposure.Assess(sk)
		if a.Idle != w.idleDetect || a.Sending != w.sendDetect {
			t.Errorf("%s: assessed idle %+v sending %+v, want %+v %+v", name, a.Idle, a.Sending, w.idleDetect, w.sendDetect)
		}
		t.Logf("%-12s port %d: keepalive=%v %v/%v/%d (%s) user_timeout=%v → idle %+v, sending %+v", name, sk.Local.Port(),
			g.Keepalive, g.KeepaliveIdle, g.KeepaliveIntvl, g.KeepaliveCount, g.KeepaliveIdleFrom, g.UserTimeout, a.Idle, a.Sending)
	}
	if !seen["v6"] {
		t.Errorf("the IPv6 connection %s is not in the snapshot", c6.LocalAddr())
	}
	delete(seen, "v6")
	if len(seen) != len(wants) {
		t.Errorf("found %d of the %d connections in the snapshot of %d sockets: %v", len(seen), len(wants), len(socks), seen)
	}
}
