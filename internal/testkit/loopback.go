package testkit

import (
	"io"
	"net"
	"testing"
)

// EchoOneByteServer is loopback load for the benchmarks, the soak and the
// tests: it listens on a free loopback port and, for every connection,
// echoes one byte and closes first, so the server side takes TIME_WAIT
// and the clients never run out of ports. Closing the listener stops it.
func EchoOneByteServer() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go AcceptAll(ln, func(c net.Conn) {
		go func() {
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err == nil {
				c.Write(b)
			}
			c.Close()
		}()
	})
	return ln, nil
}

// Loopback makes one connection on 127.0.0.1 and returns both ends,
// closed when the test ends (a test may close either sooner).
func Loopback(tb testing.TB) (client, server *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// AcceptAll hands every connection ln accepts to handle, on the calling
// goroutine, until ln is closed: the accept loop of a test's server (run
// it with go; handle starts a goroutine for work that blocks).
func AcceptAll(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		handle(c)
	}
}
