package testkit

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// SetInt sets an integer socket option on c, or fails the test.
func SetInt(tb testing.TB, c syscall.Conn, level, opt, val int) {
	tb.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, val) }); err != nil {
		tb.Fatal(err)
	}
	if serr != nil {
		tb.Fatalf("setsockopt(%d, %d, %d): %v", level, opt, val, serr)
	}
}

// Keepalive turns on SO_KEEPALIVE on c: the first probe after idle
// seconds of silence, then one every intvl seconds, probes of them
// unanswered before the kernel gives up.
func Keepalive(tb testing.TB, c syscall.Conn, idle, intvl, probes int) {
	tb.Helper()
	SetInt(tb, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	SetInt(tb, c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, idle)
	SetInt(tb, c, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, intvl)
	SetInt(tb, c, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, probes)
}
