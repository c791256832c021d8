package engine

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// On the real kernel: a connection in an episode (keepalive probing a
// blackholed peer) dies while the socket table is being read, and the
// reader is behind. The table misses the socket; its end (CLOSE with
// ETIMEDOUT, the error) is dated inside the reading and still unread when
// the table comes back. Another connection's record, written 30 ms into the
// reading, is read first (the reading loop is held on it until the table
// is back: a reader behind the ring). Before the fix the table was applied
// at that record and the connection told untold, its end then read as a
// second story; the end must be told.
func TestReconcileDuringAKernelDeath(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := hosts.Pair(t, "a", "b")
	client, _ := hosts.Connect(t, a, b, 7302)
	// Probes 2 s apart: the one-probe-more limit set once the reading has
	// begun ends the connection at the next expiry, with no record of it
	// between the reading's start and its death.
	rc, _ := client.SyscallConn()
	setInt := func(level, opt, v int) {
		t.Helper()
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), level, opt, v) }); cerr != nil || err != nil {
			t.Fatal(cerr, err)
		}
	}
	setInt(unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	setInt(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 1)
	setInt(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 2)
	setInt(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 60)
	undo, err := a.Blackhole(b.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	dead := make(chan struct{})
	go func() {
		_, err := client.Read(make([]byte, 1))
		if !errors.Is(err, unix.ETIMEDOUT) {
			t.Errorf("the client's read: %v, want ETIMEDOUT", err)
		}
		close(dead)
	}()

	netns := hosts.Netns(t, a)
	local := netip.MustParseAddrPort(client.LocalAddr().String())
	// A port nobody listens on in a's namespace: a connect to it is
	// refused at once, and its reset is the record the loop is held on.
	const refusedPort = 7399
	var armed atomic.Bool
	reading := make(chan time.Duration, 1)
	returned := make(chan struct{})
	var once sync.Once
	cfg := Config{Filter: Filter{NetNS: netns}, ReconcileEvery: 100 * time.Millisecond,
		LiveTable: func(ns []uint32) (Alive, error) {
			racing := false
			if armed.Load() {
				once.Do(func() { racing = true })
			}
			if !racing {
				return sockdiag.Live(ns)
			}
			reading <- wire.MonotonicNow()
			<-dead // the connection dies while its namespace is read
			defer close(returned)
			return sockdiag.Live(ns)
		},
		Accept: func(ev *wire.Event) bool {
			if ev.Remote.Port() == refusedPort {
				<-returned
				time.Sleep(50 * time.Millisecond) // the table reaches the loop first
			}
			return true
		}}
	tr, err := tracer.New(cfg.Kernel(tracer.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	e := New(tr, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	col := newCollector()
	done := make(chan error, 1)
	go func() { _, err := e.Run(ctx, col); done <- err }()

	waitFor := func(what string, within time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within %v; told %+v", what, within, col.Got())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("keepalive_probing", 20*time.Second, func() bool {
		_, ok := col.Find(verdictAt(tracker.KeepaliveProbing, local))
		return ok
	})
	armed.Store(true)
	var asOf time.Duration
	select {
	case asOf = <-reading:
	case <-time.After(10 * time.Second):
		t.Fatal("the socket table was not read once armed")
	}
	// The probes sent so far are the last: the next expiry kills it.
	var info *unix.TCPInfo
	if cerr := rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); cerr != nil || err != nil {
		t.Fatal(cerr, err)
	}
	setInt(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, max(int(info.Probes), 1))
	time.Sleep(30 * time.Millisecond)
	refused := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), refusedPort).String()
	if err := a.Do(func() error {
		c, err := net.Dial("tcp", refused)
		if err == nil {
			c.Close()
			return errors.New("something listens on " + refused)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	case <-time.After(20 * time.Second):
		t.Fatal("the connection did not die")
	}
	waitFor("the end", 10*time.Second, func() bool {
		_, ok := col.Find(func(n tracker.Narrative) bool { return n.Local == local && n.Final })
		return ok
	})
	time.Sleep(3 * tickEvery) // anything told after the end
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	var told []tracker.Verdict
	var end tracker.Narrative
	for _, n := range col.Got() {
		if n.Local == local {
			told = append(told, n.Verdict)
			if n.Final && end.Verdict == "" {
				end = n
			}
		}
	}
	if end.Verdict != tracker.KeepaliveTimeout || end.Mono <= asOf {
		t.Fatalf("told %v, the end %s at %v (the reading began at %v); want keepalive_timeout, dated inside the reading",
			told, end.Verdict, end.Mono, asOf)
	}
	for _, v := range told {
		if v == tracker.Untold {
			t.Fatalf("told %v: untold, although the kernel wrote its end", told)
		}
	}
}
