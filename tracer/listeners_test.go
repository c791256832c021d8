package tracer_test

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/lab/netlab"
	"github.com/tcpwatch/tcpwatch/tracer"
)

// sockaddrOf is addr as the socket calls take it, with its family.
func sockaddrOf(addr netip.AddrPort) (int, unix.Sockaddr) {
	if addr.Addr().Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
}

// listenIn opens a listener on addr in h that never accepts; deferAccept
// sets TCP_DEFER_ACCEPT (seconds) when not 0.
func listenIn(tb testing.TB, h *netlab.Host, addr netip.AddrPort, backlog, deferAccept int) {
	tb.Helper()
	family, sa := sockaddrOf(addr)
	var fd int
	err := h.Do(func() (err error) {
		if fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err = unix.Bind(fd, sa); err != nil {
			return err
		}
		if deferAccept != 0 {
			if err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAccept); err != nil {
				return err
			}
		}
		return unix.Listen(fd, backlog)
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
}

// connectFrom starts n non-blocking connects from h to addr.
func connectFrom(tb testing.TB, h *netlab.Host, addr netip.AddrPort, n int) {
	tb.Helper()
	family, sa := sockaddrOf(addr)
	for range n {
		err := h.Do(func() error {
			fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			tb.Cleanup(func() { unix.Close(fd) })
			if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
				return err
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// B's SYN-ACKs die in A's firewall: B's kernel retransmits them, and the
// kernel half counts them per listener, with the clients (request
// sockets) that never answered, none of them acked, and B's SYN queue.
func TestSynackRetransmitsCountedPerListener(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := pair(t)
	col := startTracer(t, tracer.Config{})
	var st unix.Stat_t
	if err := unix.Stat(b.NetnsPath(), &st); err != nil {
		t.Fatal(err)
	}
	for i, fam := range hosts.Families(b) {
		t.Run(fam.Name, func(t *testing.T) {
			addr := netip.AddrPortFrom(fam.Addr, uint16(7301+i))
			listenIn(t, b, addr, 64, 0)
			undo, err := a.DropTCPFrom(fam.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer undo()
			connectFrom(t, a, addr, 3)
			family := uint16(unix.AF_INET)
			if fam.Addr.Is6() {
				family = unix.AF_INET6
			}
			l := waitSynack(t, col.t, uint32(st.Ino), addr.Port(), family, func(l tracer.SynackListener) bool {
				return l.Clients == 3 && l.Retransmits >= 3
			})
			if l.AckedClients != 0 || l.SynQueue != 3 || l.AcceptQueue != 0 || l.AcceptLimit != 64 || l.Last == 0 {
				t.Errorf("listener %+v: want no acked client, SYN queue 3, accept queue 0 of 64", l)
			}
			t.Logf("%s: %d SYN-ACKs retransmitted to %d clients, SYN queue %d", fam.Name, l.Retransmits, l.Clients, l.SynQueue)
		})
	}
}

// A client that completed the handshake, whose request socket the kernel
// keeps and whose SYN-ACK it retransmits anyway, is counted apart
// (acked): the kernel keeps it so when the ACK found the accept queue
// full, or, as here where it is deterministic, when TCP_DEFER_ACCEPT
// waits for data the client never sends (tcp_check_req sets acked and
// drops the bare ACK; with a 1 s deferral the timer resends at its first
// expiry: syn_ack_recalc).
func TestSynackRetransmitsToAckedClients(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := pair(t)
	col := startTracer(t, tracer.Config{})
	var st unix.Stat_t
	if err := unix.Stat(b.NetnsPath(), &st); err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(b.Addr4(), 7311)
	listenIn(t, b, addr, 64, 1)
	connectFrom(t, a, addr, 2)
	l := waitSynack(t, col.t, uint32(st.Ino), addr.Port(), unix.AF_INET, func(l tracer.SynackListener) bool {
		return l.AckedClients == 2
	})
	if l.Clients != 0 || l.Retransmits < 2 {
		t.Errorf("listener %+v: want 2 acked clients, none unanswered", l)
	}
	t.Logf("%d SYN-ACKs retransmitted to %d acked clients", l.Retransmits, l.AckedClients)
}

// waitSynack waits up to 10 s for the kernel half's counters of a
// listener to satisfy done.
func waitSynack(t *testing.T, tr *tracer.Tracer, netns uint32, port, family uint16, done func(tracer.SynackListener) bool) tracer.SynackListener {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ls, err := tr.SynackRetransmits()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			if l.NetNS == netns && l.Port == port && l.Family == family && done(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener %d in netns %d: not counted as wanted within 10 s: %+v", port, netns, ls)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
