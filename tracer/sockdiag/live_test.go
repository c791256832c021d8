package sockdiag

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
)

// The live table has a connection while it exists, by cookie and by
// 4-tuple, and no longer once it is closed; a namespace it cannot find is
// unknown, not empty.
func TestLiveTable(t *testing.T) {
	testkit.RequirePrivileged(t)
	c, _ := testkit.Loopback(t)
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	ns := uint32(st.Ino)
	raw, _ := c.SyscallConn()
	var cookie uint64
	raw.Control(func(fd uintptr) {
		v, err := unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
		if err != nil {
			t.Fatal(err)
		}
		cookie = v
	})
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(c.RemoteAddr().String())

	table, err := Live([]uint32{ns, 1})
	if err != nil {
		t.Fatal(err)
	}
	if !table.Has(ns, cookie, local, remote) || !table.Has(ns, 0, local, remote) {
		t.Fatalf("live connection (cookie %d) not in a table of %d sockets", cookie, len(table.cookies))
	}
	// A namespace no process or name holds cannot be read, which is not
	// the same as empty: orphan sockets may still live in it.
	if !table.Has(1, 0, local, remote) {
		t.Error("a namespace that cannot be found was taken for empty")
	}
	// An abortive close (SO_LINGER 0: RST) destroys the socket at once.
	c.SetLinger(0)
	c.Close()
	table, err = Live([]uint32{ns})
	if err != nil {
		t.Fatal(err)
	}
	if table.Has(ns, cookie, local, remote) || table.Has(ns, 0, local, remote) {
		t.Errorf("closed connection still in the table")
	}
}
