package tracer_test

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/lab/netlab"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// smallWindow is a listener whose connections advertise a receive window
// of a few KiB from the start: it closes as soon as the application stops
// reading, with nothing in flight (the window-probe timer's case).
var smallWindow = net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	if err != nil {
		return err
	}
	return serr
}}

// writeBehindFirewall connects a to b at dst:port, has block (a's DropTo
// or DropFrom) drop one direction until the test ends, writes n bytes from
// a and returns a's end of the connection.
func writeBehindFirewall(t *testing.T, a, b *netlab.Host, dst netip.Addr, port int, block func(netip.Addr) (func() error, error), n int) netip.AddrPort {
	t.Helper()
	client, _ := hosts.ConnectTo(t, a, b, dst, port, net.ListenConfig{})
	undo, err := block(dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { undo() })
	if _, err := client.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	return netip.MustParseAddrPort(client.LocalAddr().String())
}

func dropReasons(tb testing.TB) tcp.DropReasons {
	ki, err := tracer.ProbeKernel("")
	if err != nil {
		tb.Fatal(err)
	}
	if len(ki.DropReasons) == 0 {
		tb.Fatal("this kernel's BTF has no enum skb_drop_reason")
	}
	return ki.DropReasons
}

// A's own firewall drops what A sends: new data never leaves, nothing is
// in flight, and the kernel runs the window-probe timer, not the
// retransmission timer. Its expiries and the probes' drops are told.
func TestWindowProbesDroppedByThisHostsFirewall(t *testing.T) {
	testkit.RequirePrivileged(t)
	reasons := dropReasons(t)
	a, b := pair(t)
	col := startTracer(t, tracer.Config{})
	for i, fam := range hosts.Families(b) {
		t.Run(fam.Name, func(t *testing.T) {
			local := writeBehindFirewall(t, a, b, fam.Addr, 7101+i, a.DropTo, 3000)
			second := col.wait(t, 10*time.Second, "second window probe", func(e *wire.Event) bool {
				return e.Kind == wire.KindProbe0 && e.Local == local && e.ProbesOut >= 2
			})
			if second.NotSent == 0 || second.SndWnd == 0 || second.PacketsOut != 0 || second.ProbesBefore+1 != second.ProbesOut {
				t.Errorf("probe: notsent %d snd_wnd %d packets_out %d probes %d -> %d", second.NotSent, second.SndWnd,
					second.PacketsOut, second.ProbesBefore, second.ProbesOut)
			}
			drop := col.wait(t, 5*time.Second, "a probe dropped by netfilter OUTPUT", func(e *wire.Event) bool {
				return e.Kind == wire.KindDrop && e.Local == local && e.Cookie == second.Cookie
			})
			if reasons.Name(drop.Detail) != "NETFILTER_DROP" || drop.NFHook != wire.NFHookOutput || drop.Flags&wire.FlagDropIn != 0 || drop.Drops == 0 {
				t.Errorf("drop: reason %s hook %v flags %b drops %d", reasons.Name(drop.Detail), drop.NFHook, drop.Flags, drop.Drops)
			}
			t.Logf("%s: probe %d at rto %v, drop %s (%v) x%d", fam.Name, second.ProbesOut, second.RTO,
				reasons.Name(drop.Detail), drop.NFHook, drop.Drops)
		})
	}
}

// The peer's application stops reading: its window closes, and the
// probes it answers never add up. The records show it: a closed window,
// and probes_out back to 0 at each expiry after the first, the peer's ACK
// younger than the interval that expired (the base RTO doubled by the
// backoff before this expiry).
func TestWindowProbesAnsweredWithAClosedWindow(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := pair(t)
	col := startTracer(t, tracer.Config{})
	for i, fam := range hosts.Families(b) {
		t.Run(fam.Name, func(t *testing.T) {
			client, server := hosts.ConnectTo(t, a, b, fam.Addr, 7201+i, smallWindow)
			_ = server // never read
			client.SetWriteDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 64<<10)
			for {
				if _, err := client.Write(buf); err != nil {
					break
				}
			}
			local := netip.MustParseAddrPort(client.LocalAddr().String())
			answered := col.wait(t, 15*time.Second, "a probe after an answered one", func(e *wire.Event) bool {
				return e.Kind == wire.KindProbe0 && e.Local == local && e.ProbesBefore == 0 && e.Backoff >= 2
			})
			if answered.SndWnd != 0 || answered.ProbesOut != 1 || answered.NotSent == 0 || answered.AckAge > answered.RTO<<answered.Backoff {
				t.Errorf("probe: snd_wnd %d probes %d notsent %d ack_age %v rto %v", answered.SndWnd, answered.ProbesOut,
					answered.NotSent, answered.AckAge, answered.RTO)
			}
			t.Logf("%s: backoff %d rto %v ack_age %v notsent %d", fam.Name, answered.Backoff, answered.RTO, answered.AckAge, answered.NotSent)
		})
	}
}

// A's firewall drops what the peer sends: A's data leaves, the peer's
// ACKs die in A's INPUT chain, and A retransmits. Once the connection is
// in trouble (its first RTO), the dropped ACKs are told, with the 4-tuple
// read from their headers (they carry no socket).
func TestRepliesDroppedByThisHostsFirewall(t *testing.T) {
	testkit.RequirePrivileged(t)
	reasons := dropReasons(t)
	a, b := pair(t)
	col := startTracer(t, tracer.Config{})
	for i, fam := range hosts.Families(b) {
		t.Run(fam.Name, func(t *testing.T) {
			local := writeBehindFirewall(t, a, b, fam.Addr, 7301+i, a.DropFrom, 100)
			drop := col.wait(t, 10*time.Second, "a reply dropped by netfilter INPUT", func(e *wire.Event) bool {
				return e.Kind == wire.KindDrop && e.Local == local && e.Flags&wire.FlagDropIn != 0
			})
			if reasons.Name(drop.Detail) != "NETFILTER_DROP" || drop.NFHook != wire.NFHookInput || drop.Remote.Addr() != fam.Addr {
				t.Errorf("drop: reason %s hook %v remote %v", reasons.Name(drop.Detail), drop.NFHook, drop.Remote)
			}
			rtx := col.wait(t, 5*time.Second, "its retransmission", func(e *wire.Event) bool {
				return e.Kind == wire.KindRetransmit && e.Local == local
			})
			if rtx.Cookie != drop.Cookie {
				t.Errorf("drop cookie %d, retransmission's %d", drop.Cookie, rtx.Cookie)
			}
		})
	}
}

// The drop program runs for every packet the kernel drops. A storm of
// drops that belong to no connection in trouble (SYNs to a closed port:
// kfree_skb NO_SOCKET) must all be discarded in the kernel, none reaching
// the ring: first with no connection in trouble at all (the gate), then
// with one in trouble on another port (the port prefilter). The program's
// cost per run in both cases is logged for docs/drops.md.
func TestDropPathDiscardsUnrelatedDrops(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := pair(t)
	// Only A's connections: other tests on this kernel have their own
	// troubles, which would open the gate.
	col := startTracer(t, tracer.Config{FilterNetNS: hosts.Netns(t, a)})
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enabling BPF statistics: %v", err)
	}
	defer stats.Close()
	const storm = 5000
	closed := netip.AddrPortFrom(b.Addr4(), 7999).String()
	refuse := func(what string) tracer.DropPath {
		before, err := col.t.DropPath()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := a.Do(func() error {
			for i := 0; i < storm; i++ {
				if c, err := net.Dial("tcp", closed); err == nil {
					c.Close()
					return errors.New("something listens on the closed port")
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(start)
		after, err := col.t.DropPath()
		if err != nil {
			t.Fatal(err)
		}
		d := tracer.DropPath{Seen: after.Seen - before.Seen, Kept: after.Kept - before.Kept, Runs: after.Runs - before.Runs,
			Runtime: after.Runtime - before.Runtime}
		if d.Runs < storm {
			t.Fatalf("%s: %d runs for %d drops: BPF statistics off?", what, d.Runs, storm)
		}
		t.Logf("%s: %d connection attempts refused in %v: drop program ran %d times (%d seen past the gate, %d kept), %v per run",
			what, storm, elapsed.Round(time.Millisecond), d.Runs, d.Seen, d.Kept, d.Runtime/time.Duration(d.Runs))
		return d
	}
	if d := refuse("nothing in trouble"); d.Seen != 0 || d.Kept != 0 {
		t.Errorf("nothing in trouble: %d drops went past the gate, %d kept", d.Seen, d.Kept)
	}

	// A connection in trouble on IPv6 (its probes die in A's OUTPUT).
	client, _ := hosts.ConnectTo(t, a, b, b.Addr6(), 7401, net.ListenConfig{})
	undo, err := a.DropTo(b.Addr6())
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	if _, err := client.Write(make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort(client.LocalAddr().String())
	col.wait(t, 5*time.Second, "the troubled connection's first probe", func(e *wire.Event) bool {
		return e.Kind == wire.KindProbe0 && e.Local == local
	})
	// Kept: only the troubled connection's own probes, dropped meanwhile.
	if d := refuse("one connection in trouble elsewhere"); d.Seen < storm || d.Kept > 5 {
		t.Errorf("one in trouble: %d drops seen (want %d or more), %d kept (want its own few)", d.Seen, storm, d.Kept)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	for _, e := range col.events {
		if e.Kind == wire.KindDrop && e.Local != local {
			t.Errorf("a drop record for an unrelated connection: %v > %v", e.Local, e.Remote)
		}
	}
}

// A server listening on [::] (dual-stack, as Go's and nginx's often do)
// talks to an IPv4 client through an AF_INET6 socket with v4-mapped
// addresses, while its packets are IPv4: its drops must still be found.
func TestDropsOfADualStackServerSocket(t *testing.T) {
	testkit.RequirePrivileged(t)
	reasons := dropReasons(t)
	a, b := pair(t)
	col := startTracer(t, tracer.Config{FilterNetNS: hosts.Netns(t, b)})
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp", "[::]:7501"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	var client net.Conn
	if err := a.Do(func() (err error) {
		client, err = net.Dial("tcp", netip.AddrPortFrom(b.Addr4(), 7501).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()
	// Go prints a v4-mapped address as IPv4: ask the socket its family.
	rc, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var sa unix.Sockaddr
	rc.Control(func(fd uintptr) { sa, _ = unix.Getsockname(int(fd)) })
	if _, v6 := sa.(*unix.SockaddrInet6); !v6 {
		t.Fatalf("server socket %v is %T, not a dual-stack AF_INET6 one", server.LocalAddr(), sa)
	}
	undo, err := b.DropTo(a.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	if _, err := server.Write(make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	probe := col.wait(t, 5*time.Second, "the server's window probe", func(e *wire.Event) bool {
		return e.Kind == wire.KindProbe0 && e.Local.Port() == 7501
	})
	drop := col.wait(t, 5*time.Second, "its probe dropped by netfilter OUTPUT", func(e *wire.Event) bool {
		return e.Kind == wire.KindDrop && e.Cookie == probe.Cookie
	})
	if reasons.Name(drop.Detail) != "NETFILTER_DROP" || drop.NFHook != wire.NFHookOutput || drop.Local.Addr() != b.Addr4() {
		t.Errorf("drop: reason %s hook %v local %v (probe's %v)", reasons.Name(drop.Detail), drop.NFHook, drop.Local, probe.Local)
	}
}

// A connection whose only trouble was a window-probe episode has no
// storage (the timer programs cannot create it): when its owner closes it
// after the episode, its destroy must still be told, or user space would
// keep the episode open forever.
func TestDestroyOfAWindowProbeConnectionIsTold(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := pair(t)
	col := startTracer(t, tracer.Config{FilterNetNS: hosts.Netns(t, a)})
	client, server := hosts.ConnectTo(t, a, b, b.Addr4(), 7601, net.ListenConfig{})
	undo, err := a.DropTo(b.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write(make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort(client.LocalAddr().String())
	probe := col.wait(t, 5*time.Second, "a window probe", func(e *wire.Event) bool {
		return e.Kind == wire.KindProbe0 && e.Local == local && e.ProbesOut >= 1
	})
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	// The next probe sends the data, the server reads it: the episode is over.
	if _, err := io.ReadFull(server, make([]byte, 3000)); err != nil {
		t.Fatal(err)
	}
	client.Close()
	server.Close()
	col.wait(t, 5*time.Second, "the client socket's destroy", func(e *wire.Event) bool {
		return e.Kind == wire.KindDestroy && e.Cookie == probe.Cookie
	})
}
