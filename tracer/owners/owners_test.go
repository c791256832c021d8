package owners

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func inodeOf(t *testing.T, c interface {
	File() (*os.File, error)
}) uint32 {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	ino, ok := socketInode(target)
	if !ok {
		t.Fatalf("%q is not a socket", target)
	}
	return ino
}

// A socket this process holds is found, with this process's name; one
// nobody holds is not; a socket made after the last scan is found by the
// next lookup once MinRescan has passed.
func TestIndexFindsHolder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	x := NewIndex()
	x.MinRescan = 10 * time.Millisecond
	ino := inodeOf(t, ln.(*net.TCPListener))
	pid, comm, ok := x.Owner(ino)
	want, _ := os.ReadFile("/proc/self/comm")
	if !ok || pid != uint32(os.Getpid()) || comm != strings.TrimSpace(string(want)) {
		t.Fatalf("Owner(%d) = %d %q %v, want %d", ino, pid, comm, ok, os.Getpid())
	}
	if _, _, ok := x.Owner(1); ok {
		t.Error("inode 1 has an owner")
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(20 * time.Millisecond)
	if pid, _, ok := x.Owner(inodeOf(t, c.(*net.TCPConn))); !ok || pid != uint32(os.Getpid()) {
		t.Errorf("a socket made after the first scan: %d %v", pid, ok)
	}
}

func TestSocketInode(t *testing.T) {
	for in, want := range map[string]uint32{"socket:[123]": 123, "pipe:[5]": 0, "socket:[x]": 0, "socket:[7": 0} {
		got, ok := socketInode(in)
		if got != want || ok != (want != 0) {
			t.Errorf("socketInode(%q) = %d %v", in, got, ok)
		}
	}
}
