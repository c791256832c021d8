package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
)

// tcpwatch top in a real terminal (tmux, Debian's package) against a real
// outage: 200 connections to one peer that goes silent. The screen shows
// the incident with its countdown, Enter expands it into its connections,
// q quits, and the terminal is left as it was (off the alternate screen).
func TestTopInTmux(t *testing.T) {
	testkit.RequirePrivileged(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not installed: run make deps (it installs Debian's tmux package)")
	}
	const conns = 200
	c, servers := outageLab(t, 1)
	s := servers[0]
	// tcp_retries2=7: the kernel gives up after 51 s, the countdown runs.
	if err := c.Sysctl("net/ipv4/tcp_retries2", "7"); err != nil {
		t.Fatal(err)
	}
	startPeerServer(t, s, s.Addr4())
	peer := netip.AddrPortFrom(s.Addr4(), outagePort)
	writers := dialMany(t, c, peer, conns, -1)
	dialMany(t, c, peer, 5, -1) // idle: they share the fate

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	session := fmt.Sprintf("tcpwatch-top-%d", os.Getpid())
	script := fmt.Sprintf("TCPWATCH_MAIN=1 %s top --netns %d; echo \"top exited $?\"; sleep 120", exe, hosts.Netns(t, c))
	// A tmux server of the test's own (-S), never the person's.
	sock := filepath.Join(t.TempDir(), "tmux")
	t.Cleanup(func() { exec.Command("tmux", "-S", sock, "kill-server").Run() })
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", "sh", "-c", script)
	screen := func() string { return tmux("capture-pane", "-p", "-t", session) }
	waitScreen := func(what string, limit time.Duration, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(limit)
		for {
			sc := screen()
			if ok(sc) {
				return sc
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s on the screen within %v; it shows:\n%s", what, limit, sc)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	waitScreen("top's header", 60*time.Second, func(sc string) bool { return strings.Contains(sc, "tcpwatch top") })

	if _, err := c.Blackhole(s.Addr4()); err != nil {
		t.Fatal(err)
	}
	for _, cn := range writers {
		cn.Write(make([]byte, 100))
	}
	head := fmt.Sprintf("incident %s  %d conns (%d stalled)", peer, conns, conns)
	collapsed := waitScreen("the incident", 15*time.Second, func(sc string) bool {
		return strings.Contains(sc, head) && strings.Contains(sc, "gives up in") && strings.Contains(sc, "5 idle connections")
	})
	t.Logf("collapsed:\n%s", collapsed)
	tmux("send-keys", "-t", session, "Enter")
	expanded := waitScreen("its connections", 10*time.Second, func(sc string) bool {
		return strings.Count(sc, "-> "+peer.String()) >= 20
	})
	t.Logf("expanded:\n%s", expanded)
	if dir := os.Getenv("TCPWATCH_TOP_CAPTURE"); dir != "" {
		os.WriteFile(dir+"/top-collapsed.txt", []byte(collapsed), 0o644)
		os.WriteFile(dir+"/top-expanded.txt", []byte(expanded), 0o644)
	}
	// A second later the countdown has moved.
	time.Sleep(2 * time.Second)
	if later := screen(); later == expanded {
		t.Errorf("the screen did not change in 2 s: no refresh")
	}
	tmux("send-keys", "-t", session, "q")
	after := waitScreen("top's exit", 15*time.Second, func(sc string) bool { return strings.Contains(sc, "top exited") })
	if !strings.Contains(after, "top exited 0") || strings.Contains(after, "tcpwatch top ") {
		t.Errorf("after q the terminal shows:\n%s", after)
	}
	if alt := strings.TrimSpace(tmux("display-message", "-p", "-t", session, "#{alternate_on}")); alt != "0" {
		t.Errorf("the terminal is still on the alternate screen (alternate_on=%s)", alt)
	}

	// The other way out: the run's end (--duration, as SIGINT and SIGTERM
	// end it) restores the terminal too.
	timed := session + "-d"
	tmux("new-session", "-d", "-s", timed, "-x", "120", "-y", "30", "sh", "-c",
		fmt.Sprintf("TCPWATCH_MAIN=1 %s top --duration 3s --netns %d; echo \"top exited $?\"; sleep 120", exe, hosts.Netns(t, c)))
	session = timed
	after = waitScreen("top's exit at the end of --duration", 60*time.Second, func(sc string) bool { return strings.Contains(sc, "top exited") })
	if !strings.Contains(after, "top exited 0") || strings.Contains(after, "tcpwatch top ") {
		t.Errorf("after --duration the terminal shows:\n%s", after)
	}
	if alt := strings.TrimSpace(tmux("display-message", "-p", "-t", session, "#{alternate_on}")); alt != "0" {
		t.Errorf("after --duration the terminal is still on the alternate screen (alternate_on=%s)", alt)
	}
}
