package sockdiag

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/cgroups"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
)

// A listener that never accepts: its queue fills (backlog + 1), and every
// further SYN is turned away, counted in its sk_drops (with the
// retransmitted SYNs, more than once per client). Its cgroup comes too.
func TestListenerWatchSeesAFullAcceptQueue(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	// Made from a cgroup of the test's: the listener belongs to it.
	testkit.RequirePrivileged(t)
	mount, parent := cgroups.Parent(t)
	cg := cgroups.Make(t, mount, parent, "server")
	back := cgroups.MoveSelf(t, mount, cg)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	back()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	port := sa.(*unix.SockaddrInet4).Port
	for i := 0; i < 5; i++ {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(c)
		unix.Connect(c, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	}
	w := NewListenerWatch()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ls, err := w.Read([]Namespace{{Inode: uint32(st.Ino)}})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			if int(l.Local.Port()) != port {
				continue
			}
			if l.Queue == 2 && l.Limit == 1 && l.Drops >= 3 && l.Inode != 0 && l.CgroupID == cg.ID {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("listener %+v: want queue 2 of 1, 3 or more drops and its cgroup", l)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The namespace's SYN counters come with its listeners, read inside it:
// with tcp_syncookies=2 every SYN is answered with a cookie, counted in
// that namespace's SyncookiesSent and not in ours.
func TestListenerWatchReadsTheNamespacesSynCookies(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := hosts.Pair(t, "a", "b")
	if err := b.Sysctl("net/ipv4/tcp_syncookies", "2"); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(b.NetnsPath(), &st); err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(b.Addr4(), 7401)
	var fd int
	err := b.Do(func() (err error) {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err = unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
			return err
		}
		return unix.Listen(fd, 8)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	w := NewListenerWatch()
	read := func() NetnsCounters {
		ls, err := w.Read([]Namespace{{Inode: uint32(st.Ino)}})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			if l.Local == addr {
				return l.Space
			}
		}
		t.Fatalf("listener %s not found in netns %d: %+v", addr, st.Ino, ls)
		return NetnsCounters{}
	}
	before := read()
	if !before.Read || before.Syncookies != 2 {
		t.Fatalf("before: %+v, want the counters read and tcp_syncookies=2", before)
	}
	for range 3 {
		var c net.Conn
		if err := a.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr.String(), 5*time.Second); return err }); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	after := read()
	if got := after.SyncookiesSent - before.SyncookiesSent; got != 3 {
		t.Errorf("SyncookiesSent grew by %d, want 3 (before %+v, after %+v)", got, before, after)
	}
	mine := readNetnsCounters()
	t.Logf("b: %+v; this namespace: %+v", after, mine)
}
