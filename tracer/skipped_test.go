package tracer_test

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/bpf"
	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/lab/netlab"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// waitSkipped polls the kernel's skip counters until done says so.
func waitSkipped(t *testing.T, tr *tracer.Tracer, d time.Duration, what string, done func(tracer.Skipped) bool) tracer.Skipped {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		l, err := tr.Losses()
		if err != nil {
			t.Fatal(err)
		}
		if done(l.Skipped) {
			return l.Skipped
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; skips %+v", what, d, l.Skipped)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitEmpty polls until a map of the kernel half and its count in the
// trouble gate are back to 0: every entry went with its socket.
func waitEmpty(t *testing.T, tr *tracer.Tracer, name string, live func(bpf.TcpwatchTroubleGate) uint64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, err := tr.MapEntries(name)
		if err != nil {
			t.Fatal(err)
		}
		g, err := tr.TroubleGate()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 && live(g) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d entries left (counted %d) after every connection ended", name, n, live(g))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// onlyIn is a tracer config that watches h's namespace only: the maps
// under test are host-wide, and other tests' connections must not fill
// them or linger in them.
func onlyIn(t *testing.T, h *netlab.Host) tracer.Config {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(h.NetnsPath(), &st); err != nil {
		t.Fatal(err)
	}
	return tracer.Config{FilterNetNS: uint32(st.Ino)}
}

// abort closes c with a reset (SO_LINGER 0): its socket is destroyed at once.
func abort(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// More connections in trouble than the troubled map holds: the marks it
// refuses are counted (TW_CNT_TROUBLED_FULL), the ones it holds still have
// their drops told, and every entry goes at its socket's end, since the
// map is no LRU that would push the old ones out.
func TestTroubledFullIsCounted(t *testing.T) {
	testkit.RequirePrivileged(t)
	const room, conns = 2, 5
	a, b := pair(t)
	col := startTracer(t, tracer.WithMapEntries(onlyIn(t, a), map[string]uint32{bpf.TcpwatchMapTroubled: room}))
	if l, err := col.t.Losses(); err != nil || l.Skipped.Total() != 0 {
		t.Fatalf("skips before any trouble: %+v (%v)", l.Skipped, err)
	}
	var clients []*net.TCPConn
	for i := range conns {
		c, _ := hosts.ConnectTo(t, a, b, b.Addr4(), 7601+i, net.ListenConfig{})
		clients = append(clients, c)
	}
	undo, err := a.DropFrom(b.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { undo() })
	for _, c := range clients {
		if _, err := c.Write(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	// Each connection left out is counted at its first mark at least.
	sk := waitSkipped(t, col.t, 15*time.Second, "a refused mark per connection left out", func(s tracer.Skipped) bool {
		return s.TroubledFull >= conns-room
	})
	if sk.NoStorage != 0 || sk.KeepaliveFull != 0 {
		t.Errorf("other skips moved: %+v", sk)
	}
	if n, err := col.t.MapEntries(bpf.TcpwatchMapTroubled); err != nil || n != room {
		t.Errorf("troubled holds %d entries (%v), room for %d", n, err, room)
	}
	// The connections it holds are joined to their drops, the others not.
	col.wait(t, 10*time.Second, "a dropped reply", func(e *wire.Event) bool { return e.Kind == wire.KindDrop })
	for _, c := range clients {
		abort(t, c)
	}
	waitEmpty(t, col.t, bpf.TcpwatchMapTroubled, func(g bpf.TcpwatchTroubleGate) uint64 { return g.TroubledLive })
	told := map[netip.AddrPort]bool{}
	col.mu.Lock()
	for _, e := range col.events {
		if e.Kind == wire.KindDrop {
			told[e.Local] = true
		}
	}
	col.mu.Unlock()
	if len(told) == 0 || len(told) > room {
		t.Errorf("drops told for %d connections, troubled had room for %d", len(told), room)
	}
	t.Logf("troubled (room %d) with %d connections in trouble: %d marks refused, drops told for %d", room, conns, sk.TroubledFull, len(told))
}

// The same for the keepalive probes' map: two connections probing a
// silent peer, room for one; the other's probes are counted
// (TW_CNT_KA_FULL), and both entries are gone once the sockets are.
func TestKeepaliveFullIsCounted(t *testing.T) {
	testkit.RequirePrivileged(t)
	const room, conns = 1, 2
	a, b := pair(t)
	col := startTracer(t, tracer.WithMapEntries(onlyIn(t, a), map[string]uint32{bpf.TcpwatchMapKaProbes: room}))
	var clients []*net.TCPConn
	for i := range conns {
		c, _ := hosts.ConnectTo(t, a, b, b.Addr4(), 7701+i, net.ListenConfig{})
		if err := c.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 20}); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	undo, err := a.DropFrom(b.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { undo() })
	sk := waitSkipped(t, col.t, 20*time.Second, "a probe not remembered", func(s tracer.Skipped) bool {
		return s.KeepaliveFull >= 1
	})
	if n, err := col.t.MapEntries(bpf.TcpwatchMapKaProbes); err != nil || n != room {
		t.Errorf("ka_probes holds %d entries (%v), room for %d", n, err, room)
	}
	for _, c := range clients {
		abort(t, c)
	}
	waitEmpty(t, col.t, bpf.TcpwatchMapKaProbes, func(g bpf.TcpwatchTroubleGate) uint64 { return g.KaLive })
	waitEmpty(t, col.t, bpf.TcpwatchMapTroubled, func(g bpf.TcpwatchTroubleGate) uint64 { return g.TroubledLive })
	t.Logf("ka_probes (room %d) with %d connections probing: %d probes not remembered", room, conns, sk.KeepaliveFull)
}

// The same for the listeners' SYN-ACK counters: two listeners whose
// clients never answer, room for one; the other's retransmissions are
// counted (TW_CNT_SYNACK_FULL), and the entry goes when its listener
// closes.
func TestSynackFullIsCounted(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := pair(t)
	col := startTracer(t, tracer.WithMapEntries(onlyIn(t, b), map[string]uint32{bpf.TcpwatchMapSynackListeners: 1}))
	undo, err := a.DropTCPFrom(b.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { undo() })
	var closers []func()
	for port := uint16(7801); port <= 7802; port++ {
		addr := netip.AddrPortFrom(b.Addr4(), port)
		var fd int
		err := b.Do(func() (err error) {
			if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
				return err
			}
			if err = unix.Bind(fd, &unix.SockaddrInet4{Port: int(port), Addr: addr.Addr().As4()}); err != nil {
				unix.Close(fd)
				return err
			}
			return unix.Listen(fd, 16)
		})
		if err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		closeIt := func() { once.Do(func() { unix.Close(fd) }) }
		t.Cleanup(closeIt)
		closers = append(closers, closeIt)
		connectFrom(t, a, addr, 2)
	}
	sk := waitSkipped(t, col.t, 15*time.Second, "a SYN-ACK retransmission not counted", func(s tracer.Skipped) bool {
		return s.SynackFull >= 1
	})
	if n, err := col.t.MapEntries(bpf.TcpwatchMapSynackListeners); err != nil || n != 1 {
		t.Errorf("synack_listeners holds %d entries (%v), room for 1", n, err)
	}
	for _, c := range closers {
		c()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := col.t.MapEntries(bpf.TcpwatchMapSynackListeners)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("synack_listeners: %d entries left after its listeners closed", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("synack_listeners (room 1) with 2 listeners: %d retransmissions not counted", sk.SynackFull)
}
