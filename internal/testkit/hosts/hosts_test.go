package hosts

import (
	"testing"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
)

func TestPairConnects(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := Pair(t, "a", "b")
	if Netns(t, a) == Netns(t, b) || Netns(t, a) == 0 {
		t.Fatalf("hosts share a namespace: %d, %d", Netns(t, a), Netns(t, b))
	}
	c, s := Connect(t, a, b, 8080)
	if c.RemoteAddr().String() != s.LocalAddr().String() || c.LocalAddr().String() != s.RemoteAddr().String() {
		t.Errorf("client %v>%v, server %v>%v: not the two ends of one connection",
			c.LocalAddr(), c.RemoteAddr(), s.LocalAddr(), s.RemoteAddr())
	}
	if _, err := c.Write([]byte{7}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := s.Read(buf); err != nil || buf[0] != 7 {
		t.Fatalf("read %v, %v", buf, err)
	}
}
