package testkit

import (
	"io"
	"net"
	"testing"
)

func TestEchoOneByteServer(t *testing.T) {
	ln, err := EchoOneByteServer()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{7}); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c) // the byte, then EOF: the server closed first
	if err != nil || len(b) != 1 || b[0] != 7 {
		t.Fatalf("read %v, %v; want [7] then EOF", b, err)
	}
}

func TestLoopback(t *testing.T) {
	c, s := Loopback(t)
	if c.LocalAddr().String() != s.RemoteAddr().String() || c.RemoteAddr().String() != s.LocalAddr().String() {
		t.Fatalf("client %v>%v, server %v>%v: not one connection", c.LocalAddr(), c.RemoteAddr(), s.LocalAddr(), s.RemoteAddr())
	}
	if _, err := s.Write([]byte{9}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 9 {
		t.Fatalf("read %v, %v", b, err)
	}
}
