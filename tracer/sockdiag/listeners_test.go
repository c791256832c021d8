package sockdiag

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A listener that never accepts: its queue fills (backlog + 1), and every
// further SYN is turned away, counted in its sk_drops (with the
// retransmitted SYNs, more than once per client).
func TestListenerWatchSeesAFullAcceptQueue(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
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
			if l.Queue == 2 && l.Limit == 1 && l.Drops >= 3 && l.Inode != 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("listener %+v: want queue 2 of 1 and 3 or more drops", l)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}
