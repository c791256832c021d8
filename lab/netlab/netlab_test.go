//go:build linux

package netlab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// requireRoot: see testkit.RequirePrivileged (skip on a laptop, fail in CI).
func requireRoot(t *testing.T) {
	t.Helper()
	testkit.RequirePrivileged(t)
}

const staleHelperEnv = "NETLAB_TEST_STALE_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(staleHelperEnv) == "1" {
		staleLabHelper()
		return
	}
	os.Exit(m.Run())
}

func newLab(t *testing.T) *Lab {
	t.Helper()
	requireRoot(t)
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

func mustHost(t *testing.T, l *Lab, name string) *Host {
	t.Helper()
	h, err := l.AddHost(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// pair is the smallest lab: a and b joined by one cable.
func pair(t *testing.T) (l *Lab, a, b *Host, c *Cable) {
	t.Helper()
	l = newLab(t)
	a, b = mustHost(t, l, "a"), mustHost(t, l, "b")
	c, err := l.Cable(a, b, CableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l, a, b, c
}

func mustSysctl(t *testing.T, h *Host, key, value string) {
	t.Helper()
	if err := h.Sysctl(key, value); err != nil {
		t.Fatal(err)
	}
}

// echoServer listens on ip in h and echoes every connection until the test
// ends.
func echoServer(t *testing.T, h *Host, ip netip.Addr) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go testkit.AcceptAll(ln, func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		go io.Copy(c, c)
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

func dial(h *Host, to netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", to.String(), timeout)
		return err
	})
	return c, err
}

func mustDial(t *testing.T, h *Host, to netip.AddrPort) net.Conn {
	t.Helper()
	c, err := dial(h, to, 3*time.Second)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", to, h.Name(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and expects it echoed within d.
func roundTrip(c net.Conn, msg string, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo: got %q, want %q", buf, msg)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestConnectIPv4AndIPv6(t *testing.T) {
	t.Parallel()
	_, a, b, c := pair(t)
	if got, want := b.Addr4(), c.Addr4(b); got != want || !got.Is4() {
		t.Fatalf("b.Addr4() = %v, cable says %v", got, want)
	}
	for _, ip := range []netip.Addr{b.Addr4(), b.Addr6()} {
		conn := mustDial(t, a, echoServer(t, b, ip))
		if err := roundTrip(conn, "hello "+ip.String(), 2*time.Second); err != nil {
			t.Fatalf("%s: %v", ip, err)
		}
		local := netip.MustParseAddrPort(conn.LocalAddr().String()).Addr().Unmap()
		if want := map[bool]netip.Addr{true: a.Addr4(), false: a.Addr6()}[ip.Is4()]; local != want {
			t.Errorf("connection to %s comes from %s, want %s", ip, local, want)
		}
	}
}

func TestPullAndPlug(t *testing.T) {
	t.Parallel()
	_, a, b, c := pair(t)
	conns := map[string]net.Conn{}
	for _, ip := range []netip.Addr{b.Addr4(), b.Addr6()} {
		conns[ip.String()] = mustDial(t, a, echoServer(t, b, ip))
	}
	if err := c.Pull(); err != nil {
		t.Fatal(err)
	}
	// What a host sees of a pulled cable: its interface is still UP but has
	// no carrier, and keeps its addresses.
	var link netlink.Link
	if err := a.Do(func() (err error) {
		link, err = netlink.LinkByName(c.Interface(a))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	attrs := link.Attrs()
	t.Logf("after Pull, a's %s: flags=%v operstate=%v", attrs.Name, attrs.Flags, attrs.OperState)
	if attrs.Flags&net.FlagUp == 0 || attrs.RawFlags&unix.IFF_LOWER_UP != 0 {
		t.Errorf("pulled cable: want %s administratively up without carrier, flags %v", attrs.Name, attrs.Flags)
	}

	var wg sync.WaitGroup
	for name, conn := range conns {
		wg.Go(func() {
			conn.SetDeadline(time.Now().Add(time.Second))
			if _, err := io.WriteString(conn, "ping"); err != nil {
				t.Errorf("%s: write after Pull failed at once (%v); the data should just sit unacknowledged", name, err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(conn, buf); !isTimeout(err) {
				t.Errorf("%s: read after Pull: got %v, want a timeout", name, err)
			}
		})
	}
	wg.Wait()
	if err := c.Plug(); err != nil {
		t.Fatal(err)
	}
	// The segment written while pulled is retransmitted and echoed.
	for name, conn := range conns {
		wg.Go(func() {
			start := time.Now()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
				t.Errorf("%s: after Plug: %q, %v", name, buf, err)
			}
			t.Logf("%s: data written during the pull echoed %v after Plug", name, time.Since(start).Round(10*time.Millisecond))
			if err := roundTrip(conn, "again", 2*time.Second); err != nil {
				t.Errorf("%s: after Plug: %v", name, err)
			}
		})
	}
	wg.Wait()
}

// A new connection to a peer behind a pulled cable fails once neighbour
// resolution gives up, with EHOSTUNREACH rather than a timeout.
func TestPullNewConnectionHostUnreachable(t *testing.T) {
	t.Parallel()
	_, a, b, c := pair(t)
	addrs := []netip.AddrPort{echoServer(t, b, b.Addr4()), echoServer(t, b, b.Addr6())}
	if err := c.Pull(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, to := range addrs {
		wg.Go(func() {
			start := time.Now()
			conn, err := dial(a, to, 10*time.Second)
			if err == nil {
				conn.Close()
			}
			if !errors.Is(err, syscall.EHOSTUNREACH) {
				t.Errorf("dial %s over a pulled cable: %v, want EHOSTUNREACH", to, err)
			}
			t.Logf("dial %s over a pulled cable: %v after %v", to, err, time.Since(start).Round(10*time.Millisecond))
		})
	}
	wg.Wait()
}

// An established connection whose cable stays pulled dies when its
// retransmissions run out. Neighbour resolution failed before that (it is
// made faster than the default 3 s here so it surely does), which left
// EHOSTUNREACH as a soft error on the socket, and that is what the
// application gets instead of ETIMEDOUT.
func TestPullEstablishedConnectionDies(t *testing.T) {
	t.Parallel()
	_, a, b, c := pair(t)
	mustSysctl(t, a, "net/ipv4/tcp_retries2", "3")
	for _, fam := range []string{"ipv4", "ipv6"} {
		mustSysctl(t, a, "net/"+fam+"/neigh/"+c.Interface(a)+"/retrans_time_ms", "500")
	}
	conns := []net.Conn{mustDial(t, a, echoServer(t, b, b.Addr4())), mustDial(t, a, echoServer(t, b, b.Addr6()))}
	if err := c.Pull(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, conn := range conns {
		wg.Go(func() {
			start := time.Now()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, "ping")
			_, err := conn.Read(make([]byte, 4))
			t.Logf("read on a connection whose cable stays pulled (tcp_retries2=3): %v after %v", err, time.Since(start).Round(10*time.Millisecond))
			if !errors.Is(err, syscall.EHOSTUNREACH) {
				t.Errorf("got %v, want EHOSTUNREACH", err)
			}
		})
	}
	wg.Wait()
}

func TestBlackhole(t *testing.T) {
	t.Parallel()
	_, a, b, _ := pair(t)
	mustSysctl(t, a, "net/ipv4/tcp_syn_retries", "1")
	for _, ip := range []netip.Addr{b.Addr4(), b.Addr6()} {
		t.Run(ip.String(), func(t *testing.T) {
			t.Parallel()
			srv := echoServer(t, b, ip)
			conn := mustDial(t, a, srv)
			undo, err := a.Blackhole(ip)
			if err != nil {
				t.Fatal(err)
			}
			if err := roundTrip(conn, "lost", time.Second); !isTimeout(err) {
				t.Errorf("established connection through a black hole: %v, want a timeout", err)
			}
			start := time.Now()
			c2, err := dial(a, srv, 10*time.Second)
			if err == nil {
				c2.Close()
			}
			// With tcp_syn_retries=1 the kernel gives up after the SYN and one
			// retransmission (1 s + 2 s): ETIMEDOUT, no ICMP, nothing else.
			if !errors.Is(err, syscall.ETIMEDOUT) {
				t.Errorf("dial through a black hole: %v, want ETIMEDOUT", err)
			}
			t.Logf("dial through a black hole: %v after %v", err, time.Since(start).Round(10*time.Millisecond))
			if err := undo(); err != nil {
				t.Fatal(err)
			}
			if err := undo(); err != nil {
				t.Fatalf("second undo: %v", err)
			}
			// The old connection recovers (the lost data is retransmitted) and
			// new ones work.
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "lost" {
				t.Errorf("after undo: %q, %v", buf, err)
			}
			if err := roundTrip(mustDial(t, a, srv), "back", 2*time.Second); err != nil {
				t.Errorf("after undo: %v", err)
			}
		})
	}
}

func TestDropPortOnLoopback(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h := mustHost(t, l, "solo")
	mustSysctl(t, h, "net/ipv4/tcp_syn_retries", "1")
	for _, ip := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		srv := echoServer(t, h, ip)
		conn := mustDial(t, h, srv)
		undo, err := h.DropPort(srv.Port())
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(conn, "x", 500*time.Millisecond); !isTimeout(err) {
			t.Errorf("%s: established connection to a dropped port: %v, want a timeout", ip, err)
		}
		if c, err := dial(h, srv, 500*time.Millisecond); !isTimeout(err) {
			if c != nil {
				c.Close()
			}
			t.Errorf("%s: dial a dropped port: %v, want a timeout", ip, err)
		}
		if err := undo(); err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(mustDial(t, h, srv), "y", 2*time.Second); err != nil {
			t.Errorf("%s: after undo: %v", ip, err)
		}
	}
}

func TestReboot(t *testing.T) {
	t.Parallel()
	_, a, b, c := pair(t)
	addr4, addr6 := b.Addr4(), b.Addr6()
	conn := mustDial(t, a, echoServer(t, b, addr4))
	if err := roundTrip(conn, "before", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	mustSysctl(t, b, "net/ipv4/tcp_retries2", "4")
	sleep := b.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	oldNS, err := netnsIDOf(b.NetnsPath())
	if err != nil {
		t.Fatal(err)
	}

	if err := b.Reboot(); err != nil {
		t.Fatal(err)
	}

	waited := make(chan error, 1)
	go func() { waited <- sleep.Wait() }()
	select {
	case err := <-waited:
		if ws, ok := sleep.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Errorf("process in rebooted host ended with %v, want SIGKILL", err)
		}
	case <-time.After(10 * time.Second):
		// Reboot returns only once every process it killed has exited, so
		// this is a process it never found: say what it looked like.
		pid := sleep.Process.Pid
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		var state string
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "State:"); ok {
				state = v
			}
		}
		t.Fatalf("process %d in rebooted host still running 10s after Reboot returned: netns %s (old host %v), argv %q, state %s",
			pid, ns, oldNS, strings.Split(string(cmdline), "\x00"), strings.TrimSpace(state))
	}
	newNS, err := netnsIDOf(b.NetnsPath())
	if err != nil {
		t.Fatal(err)
	}
	if newNS == oldNS {
		t.Error("Reboot kept the same namespace")
	}
	if b.Addr4() != addr4 || b.Addr6() != addr6 || c.Addr4(b) != addr4 {
		t.Errorf("addresses changed across Reboot: %v %v", b.Addr4(), b.Addr6())
	}
	if v, err := b.ReadSysctl("net/ipv4/tcp_retries2"); err != nil || v != "4" {
		t.Errorf("sysctl after Reboot: %q, %v; want it replayed", v, err)
	}

	// The peer's kernel forgot the connection: a's next segment draws an RST.
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(conn, "after"); err != nil {
		t.Fatalf("first write after the peer rebooted: %v (it should only fail on the RST)", err)
	}
	_, err = conn.Read(make([]byte, 8))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read after the peer rebooted: %v, want ECONNRESET", err)
	}
	// Nothing listens yet: refused. Then a fresh server is reachable at the
	// same addresses.
	for _, ip := range []netip.Addr{addr4, addr6} {
		if c, err := dial(a, netip.AddrPortFrom(ip, 9), 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Errorf("dial rebooted host %s: %v, want ECONNREFUSED", ip, err)
		}
		if err := roundTrip(mustDial(t, a, echoServer(t, b, ip)), "hi", 2*time.Second); err != nil {
			t.Errorf("after Reboot %s: %v", ip, err)
		}
	}
}

func TestRouterAndRouteUnreachable(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	a, b := mustHost(t, l, "a"), mustHost(t, l, "b")
	r, err := l.Router("r", a, b)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip   netip.Addr
		want syscall.Errno
	}{{b.Addr4(), syscall.EHOSTUNREACH}, {b.Addr6(), syscall.ENETUNREACH}} {
		srv := echoServer(t, b, tc.ip)
		if err := roundTrip(mustDial(t, a, srv), "via r", 2*time.Second); err != nil {
			t.Fatalf("%s through router: %v", tc.ip, err)
		}
		undo, err := r.RouteUnreachable(tc.ip)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c, err := dial(a, srv, 3*time.Second)
		if err == nil {
			c.Close()
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("dial %s with an unreachable route on the router: %v, want %v", tc.ip, err, tc.want)
		}
		t.Logf("dial %s, router has an unreachable route: %v after %v", tc.ip, err, time.Since(start).Round(time.Millisecond))
		if err := undo(); err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(mustDial(t, a, srv), "again", 2*time.Second); err != nil {
			t.Errorf("%s after undo: %v", tc.ip, err)
		}
	}
	// Routes set up by Router are configuration: they survive a reboot.
	if err := a.Reboot(); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(mustDial(t, a, echoServer(t, b, b.Addr4())), "rebooted", 2*time.Second); err != nil {
		t.Errorf("after a rebooted: %v", err)
	}
}

func TestCommandRunsInNamespace(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h := mustHost(t, l, "h")
	want, err := netnsIDOf(h.NetnsPath())
	if err != nil {
		t.Fatal(err)
	}
	self, err := netnsIDOf("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}

	// Env replaced wholesale on purpose: the mechanism must not depend on it.
	cmd := h.Command("sh", "-c", `readlink /proc/self/ns/net; echo "$FOO"`)
	cmd.Env = []string{"FOO=bar", "PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got, wantOut := string(out), fmt.Sprintf("net:[%d]\nbar\n", want.ino); got != wantOut {
		t.Errorf("child printed %q, want %q (test runs in net:[%d])", got, wantOut, self.ino)
	}

	// A long-running process, checked from outside, and killed by Close.
	sleep := h.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	pid := sleep.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) == "sleep" {
			break // exec'd: past the point of joining the namespace
		}
		if time.Now().After(deadline) {
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			stack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stack", pid))
			wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Fatalf("pid %d never became sleep (comm %q cmdline %q wchan %s)\n%s\n%s", pid, comm, cmdline, wchan, status, stack)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, err := netnsIDOf(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil || got != want {
		t.Fatalf("pid %d is in %v (%v), want the host's namespace %v", pid, got, err, want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sleep.Wait(); err == nil || sleep.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("after Close: %v, want killed", err)
	}

	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := h.Command("true").Run(); err == nil {
		t.Error("a command in a closed lab's host ran")
	}
}

func TestSysctlStaysInNamespace(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	h, other := mustHost(t, l, "h"), mustHost(t, l, "other")
	const key = "net/ipv4/tcp_retries2"
	outside, err := readSysctl(key)
	if err != nil {
		t.Fatal(err)
	}
	def, err := other.ReadSysctl(key)
	if err != nil {
		t.Fatal(err)
	}
	value := "3"
	if def == value || outside == value {
		value = "5"
	}
	mustSysctl(t, h, "net.ipv4.tcp_retries2", value)
	if got, err := h.ReadSysctl(key); err != nil || got != value {
		t.Errorf("in h: %q, %v; want %s", got, err, value)
	}
	if got, _ := other.ReadSysctl(key); got != def {
		t.Errorf("in other host: %q, want %q", got, def)
	}
	if got, _ := readSysctl(key); got != outside {
		t.Errorf("outside the lab: %q, want %q", got, outside)
	}
	if err := h.Sysctl("kernel/hostname", "x"); err == nil {
		t.Error("a global sysctl was accepted")
	}
}

// labNamespaces lists the bind mounts of namespaces whose names start with
// prefix.
func labNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	a, b := mustHost(t, l, "a"), mustHost(t, l, "b")
	if _, err := l.Cable(a, b, CableOptions{MTU: 1400}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Router("r", a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Blackhole(b.Addr4()); err != nil {
		t.Fatal(err)
	}
	names := labNamespaces(t, l.Prefix())
	slices.Sort(names)
	if want := []string{l.Prefix() + "a", l.Prefix() + "b", l.Prefix() + "r", l.Prefix() + "wire"}; !slices.Equal(names, want) {
		t.Fatalf("namespaces %v, want %v", names, want)
	}
	// Hold the namespaces open past Close to look inside them afterwards.
	var handles []netns.NsHandle
	for _, n := range names {
		h, err := netns.GetFromPath(filepath.Join(netnsDir, n))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		handles = append(handles, h)
	}
	sleep := a.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left := labNamespaces(t, l.Prefix()); len(left) > 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	for i, ns := range handles {
		nl, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		if err != nil {
			t.Fatal(err)
		}
		links, err := nl.LinkList()
		nl.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, link := range links {
			if link.Attrs().Name != "lo" {
				t.Errorf("%s still has link %s after Close", names[i], link.Attrs().Name)
			}
		}
	}
	if err := sleep.Wait(); err == nil {
		t.Error("process survived Close")
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.AddHost("late"); err == nil {
		t.Error("AddHost on a closed lab succeeded")
	}
}

// The namespace the lab is driven from must look the same before and after.
func TestCallerNamespaceUntouched(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	before := snapshotCallerNamespace(t)
	l := newLab(t)
	a, b := mustHost(t, l, "a"), mustHost(t, l, "b")
	c, err := l.Cable(a, b, CableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Router("r", a, b); err != nil {
		t.Fatal(err)
	}
	mustSysctl(t, a, "net/ipv4/tcp_retries2", "3")
	if _, err := a.Blackhole(b.Addr6()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.DropPort(80); err != nil {
		t.Fatal(err)
	}
	if err := c.Pull(); err != nil {
		t.Fatal(err)
	}
	during := snapshotCallerNamespace(t)
	if err := b.Reboot(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	after := snapshotCallerNamespace(t)
	for _, s := range []struct {
		when string
		got  string
	}{{"while the lab ran", during}, {"after Close", after}} {
		if s.got != before {
			t.Errorf("caller's namespace changed %s:\nbefore:\n%s\nthen:\n%s", s.when, before, s.got)
		}
	}
}

func snapshotCallerNamespace(t *testing.T) string {
	t.Helper()
	var sb strings.Builder
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, link := range links {
		a := link.Attrs()
		fmt.Fprintf(&sb, "link %s %s %v mtu %d\n", a.Name, link.Type(), a.Flags, a.MTU)
		addrs, _ := netlink.AddrList(link, netlink.FAMILY_ALL)
		for _, ad := range addrs {
			fmt.Fprintf(&sb, "  addr %s\n", ad.IPNet)
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var rs []string
	for _, r := range routes {
		rs = append(rs, fmt.Sprintf("route %v", r))
	}
	slices.Sort(rs)
	sb.WriteString(strings.Join(rs, "\n"))
	nft, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := nft.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		fmt.Fprintf(&sb, "\nnft table %d %s", tb.Family, tb.Name)
	}
	for _, key := range []string{"net/ipv4/tcp_retries2", "net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv6/conf/all/disable_ipv6"} {
		v, _ := readSysctl(key)
		fmt.Fprintf(&sb, "\n%s=%s", key, v)
	}
	return sb.String()
}

// TestCleanupStale kills a process in the middle of running a lab, as a test
// timeout would, and checks that CleanupStale removes what it left: its
// namespaces and a process it had started in one of them (without
// Pdeathsig, so only CleanupStale can stop it).
func TestCleanupStale(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), staleHelperEnv+"=1")
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("helper: %v", err)
	}
	var prefix string
	var orphan int
	if _, err := fmt.Sscanf(line, "%s %d", &prefix, &orphan); err != nil {
		t.Fatalf("helper said %q: %v", line, err)
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()

	left := labNamespaces(t, prefix)
	if len(left) != 3 {
		t.Fatalf("killed lab left %v, want a, b and wire", left)
	}
	orphanNS, err := netnsIDOf(fmt.Sprintf("/proc/%d/ns/net", orphan))
	if err != nil {
		t.Fatalf("orphan %d: %v", orphan, err)
	}
	if want, _ := netnsIDOf(filepath.Join(netnsDir, prefix+"a")); orphanNS != want {
		t.Fatalf("orphan %d is not in the stale lab's host", orphan)
	}

	removed, err := CleanupStale()
	for _, n := range left {
		// Other runs' leftovers still mounted in some other mount
		// namespace may fail to go: only this test's count.
		if err != nil && strings.Contains(err.Error(), n) {
			t.Fatal(err)
		}
	}
	for _, n := range left {
		if !slices.Contains(removed, n) {
			t.Errorf("CleanupStale removed %v, not %s", removed, n)
		}
	}
	for _, n := range removed {
		if !strings.HasPrefix(n, "tw-") {
			t.Errorf("CleanupStale removed %s, which is not a lab's", n)
		}
		if strings.HasPrefix(n, fmt.Sprintf("tw-%d-", os.Getpid())) {
			t.Errorf("CleanupStale removed %s, which belongs to this live process", n)
		}
	}
	if left := labNamespaces(t, prefix); len(left) > 0 {
		t.Errorf("still there after CleanupStale: %v", left)
	}
	if _, err := netnsIDOf(fmt.Sprintf("/proc/%d/ns/net", orphan)); err == nil {
		if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", orphan)); !strings.Contains(string(stat), ") Z ") {
			t.Errorf("process %d of the stale lab is still alive", orphan)
		}
	}
}

// staleLabHelper runs in a child of TestCleanupStale: it builds a lab, starts
// a process in it, reports both, and waits to be killed.
func staleLabHelper() {
	l, err := New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	a, err := l.AddHost("a")
	if err == nil {
		var b *Host
		if b, err = l.AddHost("b"); err == nil {
			_, err = l.Cable(a, b, CableOptions{})
		}
	}
	sleep := exec.Command("sleep", "60")
	if err == nil {
		err = a.Do(sleep.Start)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		l.Close()
		os.Exit(1)
	}
	fmt.Println(l.Prefix() + " " + strconv.Itoa(sleep.Process.Pid))
	time.Sleep(time.Hour)
}

func TestOwnerPid(t *testing.T) {
	for name, want := range map[string]int{
		"tw-123-ab12-a": 123, "tw-7-0000-wire": 7, "tw--x": 0, "tw-12x-a": 0, "other-1-a": 0, "tw-99": 0,
	} {
		got, ok := ownerPid(name)
		if ok != (want != 0) || got != want {
			t.Errorf("ownerPid(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
}
