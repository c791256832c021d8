package tracer_test

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/cgroups"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// A connection made by a process in a cgroup carries that cgroup's id (the
// inode of its directory), from connect() to the reset that refuses it.
func TestCgroupOfTaskContextRecords(t *testing.T) {
	testkit.RequirePrivileged(t)
	mount, parent := cgroups.Parent(t)
	cg := cgroups.Make(t, mount, parent, "app.scope")
	col := startTracer(t, tracer.Config{All: true})

	port := closedPort(t)
	cmd := exec.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port))
	cgroups.Start(t, cg, cmd)
	if err := cmd.Wait(); err == nil {
		t.Fatal("connect to a closed port succeeded")
	}
	remote := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", port))
	syn := col.wait(t, 5*time.Second, "SYN_SENT of the process in the cgroup", func(e *wire.Event) bool {
		return e.Kind == wire.KindState && e.Remote == remote && e.State == tcp.StateSynSent
	})
	rst := col.wait(t, 5*time.Second, "the reset that refused it", func(e *wire.Event) bool {
		return e.Kind == wire.KindRecvReset && e.Remote == remote
	})
	for _, e := range []wire.Event{syn, rst} {
		if e.CgroupID != cg.ID {
			t.Errorf("%v: cgroup id %d, want %d (inode of %s)", e.Kind, e.CgroupID, cg.ID, cg.Dir)
		}
	}
	if parent.ID == cg.ID || cg.ID == 0 {
		t.Fatalf("test cgroups: parent %d child %d", parent.ID, cg.ID)
	}
}

// A keepalive probe is sent by a timer, in whatever task is on the CPU:
// the record still names the cgroup of the task that made the socket (the
// probed fill), and an accepted socket the cgroup of its listener.
func TestCgroupOfTimerRecords(t *testing.T) {
	testkit.RequirePrivileged(t)
	mount, parent := cgroups.Parent(t)
	cg := cgroups.Make(t, mount, parent, "client.scope")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	col := startTracer(t, tracer.Config{All: true})

	back := cgroups.MoveSelf(t, mount, cg)
	c, err := net.Dial("tcp", ln.Addr().String())
	back()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	client := c.(*net.TCPConn)
	testkit.Keepalive(t, client, 1, 1, 3)

	local := netip.MustParseAddrPort(c.LocalAddr().String())
	probe := col.wait(t, 5*time.Second, "keepalive probe from the timer", func(e *wire.Event) bool {
		return e.Kind == wire.KindKeepalive && e.Local == local && e.Flags&wire.FlagProbeSent != 0
	})
	if probe.CgroupID != cg.ID {
		t.Errorf("keepalive probe: cgroup id %d, want %d (%s)", probe.CgroupID, cg.ID, cg.Dir)
	}
	acc := col.wait(t, 5*time.Second, "accepted socket established", func(e *wire.Event) bool {
		return e.Kind == wire.KindState && e.Remote == local && e.State == tcp.StateEstablished
	})
	if acc.CgroupID == cg.ID || acc.CgroupID == 0 {
		t.Errorf("accepted socket: cgroup id %d, want the listener's (not %d)", acc.CgroupID, cg.ID)
	}
}
