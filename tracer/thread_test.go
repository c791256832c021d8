package tracer_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// The main goroutine keeps the main thread, the thread-group leader, to
// itself: a test's goroutine that locks a thread and renames it never
// renames the process (in the 6.1 guest, with fewer threads, it did).
func init() { runtime.LockOSThread() }

// A connect() from a thread with a name of its own: the kernel half names
// the process by its thread-group leader's comm and keeps the thread's as
// extra detail, through the connect slot in the default mode. Runs in
// every kernel of the matrix (no software beyond the test binary).
func TestOwnerThreadName(t *testing.T) {
	testkit.RequirePrivileged(t)
	leader, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	process := strings.TrimSpace(string(leader))
	col := startTracer(t, tracer.Config{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens there now: the connect is refused
	type result struct {
		local netip.AddrPort
		err   error
	}
	done := make(chan result, 1)
	go func() {
		// A thread of its own, renamed, never handed back to the runtime:
		// it ends with this goroutine.
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			done <- result{err: errors.New("the dialing goroutine runs on the main thread")}
			return
		}
		name, _ := unix.BytePtrFromString("tw-dialer")
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(name)), 0, 0, 0); err != nil {
			done <- result{err: err}
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer unix.Close(fd)
		to := netip.MustParseAddrPort(closed)
		err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()})
		sa, _ := unix.Getsockname(fd)
		var local netip.AddrPort
		if in4, ok := sa.(*unix.SockaddrInet4); ok {
			local = netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))
		}
		done <- result{local: local, err: err}
	}()
	r := <-done
	if !errors.Is(r.err, syscall.ECONNREFUSED) {
		t.Fatalf("connect from tw-dialer: %v, want ECONNREFUSED", r.err)
	}
	ev := col.wait(t, 5*time.Second, "a record of the refused socket with its owner", func(e *wire.Event) bool {
		return e.Remote.String() == closed && e.PID != 0 && (r.local.Port() == 0 || e.Local.Port() == r.local.Port())
	})
	if ev.PID != uint32(os.Getpid()) || ev.Comm() != process || ev.Thread() != "tw-dialer" || ev.Owner != wire.OwnerConnect {
		t.Errorf("%v record: pid %d comm %q thread %q owner %v, want pid %d comm %q (the process) thread tw-dialer from connect()",
			ev.Kind, ev.PID, ev.Comm(), ev.Thread(), ev.Owner, os.Getpid(), process)
	}
}
