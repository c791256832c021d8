package main

import (
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/lab"
)

// A server that forgets to close: its clients close, its sockets sit in
// CLOSE_WAIT. tcpwatch (threshold shortened to 2s, so its socket scan
// runs every second, beside the exposure gauge's on the same iterator)
// tells close_wait_stuck
// once per process with how many it holds and for how long, and ends the
// episode when the process closes them (this test) or exits (a lab agent
// that never reads, killed).
func TestCloseWaitStuck(t *testing.T) {
	testkit.RequirePrivileged(t)
	s, c := hosts.Pair(t, "S", "C")
	netns := strconv.Itoa(int(hosts.Netns(t, s)))
	w := startWatch(t, "--netns", netns, "--close-wait-after", "2s", "--exposure-every", "1s")

	// The leaky server in this process: accepts, never reads, never closes.
	var ln net.Listener
	if err := s.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(s.Addr4(), 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for i := 0; i < 3; i++ {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- conn
		}
	}()
	// The leaky agent: a separate process, killed later.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	agentAddr := netip.AddrPortFrom(s.Addr4(), 9090)
	agent := s.Command(exe, append(append([]string{}, lab.AgentCommand...), "--role=server", "--addr="+agentAddr.String(), "--read=false", "--keepalive=off")...)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer agent.Process.Kill()

	dialClose := func(to string) {
		var conn net.Conn
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := c.Do(func() (err error) {
				conn, err = (&net.Dialer{KeepAlive: -1, Timeout: time.Second}).Dial("tcp", to)
				return err
			})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dial %s: %v", to, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		conn.Close() // the peer closes: the server's socket goes CLOSE_WAIT
	}
	for i := 0; i < 3; i++ {
		dialClose(ln.Addr().String())
	}
	dialClose(agentAddr.String())
	var held []net.Conn
	for i := 0; i < 3; i++ {
		held = append(held, <-accepted)
	}

	begins := func() map[int]narrativeJSON {
		out := map[int]narrativeJSON{}
		for _, line := range strings.Split(w.stdout.String(), "\n") {
			var n narrativeJSON
			if json.Unmarshal([]byte(line), &n) == nil && n.Verdict == "close_wait_stuck" && !n.Final {
				out[int(n.PID)] = n
			}
		}
		return out
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(begins()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no close_wait_stuck for both processes after 20s:\n%s\n%s", w.stdout.String(), w.stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	b := begins()
	if n, ok := b[os.Getpid()]; !ok || n.CloseWaitSockets != 3 || n.CloseWaitMs < 2000 || n.State != "CLOSE_WAIT" {
		t.Errorf("this process: %+v", n)
	}
	if n, ok := b[agent.Process.Pid]; !ok || n.CloseWaitSockets != 1 || n.CloseWaitMs < 2000 || n.Comm == "" {
		t.Errorf("the agent (pid %d): %+v", agent.Process.Pid, n)
	}
	for pid, n := range b {
		t.Logf("pid %d: %s", pid, n.Summary)
	}

	// The ends: this process closes, the agent is killed.
	time.Sleep(500 * time.Millisecond)
	for _, conn := range held {
		conn.Close()
	}
	agent.Process.Kill()
	agent.Wait()
	time.Sleep(time.Second)
	w.stop(t)
	ends := map[int]narrativeJSON{}
	count := 0
	for _, line := range strings.Split(w.stdout.String(), "\n") {
		var n narrativeJSON
		if json.Unmarshal([]byte(line), &n) != nil || n.Verdict != "close_wait_stuck" {
			continue
		}
		count++
		if n.Final {
			ends[int(n.PID)] = n
		}
	}
	if n, ok := ends[os.Getpid()]; !ok || n.CloseWaitExited || n.CloseWaitSockets != 3 {
		t.Errorf("this process's end: %+v", n)
	} else {
		t.Logf("end: %s", n.Summary)
	}
	if n, ok := ends[agent.Process.Pid]; !ok || !n.CloseWaitExited || n.CloseWaitSockets != 1 {
		t.Errorf("the agent's end: %+v", n)
	} else {
		t.Logf("end: %s", n.Summary)
	}
	if count != 4 {
		t.Errorf("%d close_wait_stuck narratives, want 4 (told once each, ended once each):\n%s", count, w.stdout.String())
	}
}
