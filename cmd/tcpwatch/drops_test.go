package main

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
)

// nginx whose worker is stopped (SIGSTOP: it never calls accept() again)
// under ab's load, listening with backlog=4: the accept queue fills, the
// kernel turns the rest of the SYNs away, and tcpwatch tells one
// accept_queue_overflow for the listener (not one line per SYN), naming
// nginx, the queue and its limit.
func TestNginxStoppedWorkerOverflowsTheAcceptQueue(t *testing.T) {
	testkit.RequirePrivileged(t)
	requireInstalled(t, "/usr/bin/ab", "apache2-utils")
	families(t, func(t *testing.T, v6 bool) {
		s, c := hosts.Pair(t, "S", "C")
		w := startWatch(t)
		master, worker, ap := startNginx(t, s, c, addrOf(s, v6), "backlog=4")
		nsS := hosts.Netns(t, s)
		// ab under way (its first request alone, then 50 at a time), then
		// the worker stops: every connection still connecting lands in
		// the accept queue or is turned away.
		url := "http://" + ap.String() + "/"
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		defer cancel()
		ab := c.Command("/usr/bin/ab", "-r", "-n", "1000000", "-c", "50", "-s", "5", url)
		abDone := make(chan string, 1)
		var abErr error
		go func() {
			out, err := runUntil(ctx, ab)
			abErr = err
			abDone <- out
		}()
		time.Sleep(700 * time.Millisecond)
		if err := syscall.Kill(worker, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(worker, syscall.SIGCONT)
		stopped := time.Now()
		out := <-abDone
		loaded := time.Since(stopped)
		time.Sleep(1500 * time.Millisecond) // one more reading of the listener
		all := w.stop(t, nsS)
		logNarratives(t, "tcpwatch", all)
		t.Logf("ab ran %v after the worker stopped (%v): %s", loaded.Round(time.Millisecond), abErr, lastLines(out, 3))

		var told []narrativeJSON
		for _, n := range all {
			if n.Verdict == "accept_queue_overflow" {
				told = append(told, n)
			}
		}
		if len(told) == 0 {
			t.Fatalf("no accept_queue_overflow for nginx on %s; tcpwatch said:\n%s\nstderr:\n%s", ap, w.stdout.String(), w.stderr.String())
		}
		// One per listener and episode, again at most every 10 s.
		if limit := int(loaded/(10*time.Second)) + 2; len(told) > limit {
			t.Errorf("%d accept_queue_overflow lines in %v, want at most %d", len(told), loaded, limit)
		}
		n := told[0]
		t.Logf("%s", n.Summary)
		if n.LPort != ap.Port() || n.Comm != "nginx" || (int(n.PID) != master && int(n.PID) != worker) ||
			n.QueueLimit != 4 || n.QueueLen < 4 || n.TurnedAway < 1 || !strings.Contains(n.Summary, "the server stopped accepting") {
			t.Errorf("accept_queue_overflow: port %d pid %d comm %q queue %d/%d turned away %d: %s (master %d, worker %d)",
				n.LPort, n.PID, n.Comm, n.QueueLen, n.QueueLimit, n.TurnedAway, n.Summary, master, worker)
		}
		// What it points at, and one incident for the listener: every
		// line of the episode carries its id.
		if n.Listener == nil || n.Listener.Cause != "not_accepting" || !strings.Contains(n.Summary, "call the owners of nginx") {
			t.Errorf("accept_queue_overflow: listener %+v, summary %s: want cause not_accepting and the team to call", n.Listener, n.Summary)
		}
		for _, o := range told {
			if o.IncidentID == "" || o.IncidentID != n.IncidentID {
				t.Errorf("accept_queue_overflow lines with incident ids %q and %q: want one per listener", n.IncidentID, o.IncidentID)
			}
		}
		t.Logf("listener: %+v", *n.Listener)
	})
}

func runUntil(ctx context.Context, cmd *exec.Cmd) (string, error) {
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return out.String(), ctx.Err()
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " / ")
}

// redis-cli pinging a redis whose replies this client host's own firewall
// drops (nft INPUT): the requests leave, redis answers, the answers die
// here. tcpwatch must not call it a dead peer: the stalled line says the
// peer is answering and where its answers died.
func TestRedisRepliesDroppedOnTheClientsHost(t *testing.T) {
	testkit.RequirePrivileged(t)
	requireInstalled(t, "/usr/bin/redis-cli", "redis-server")
	families(t, func(t *testing.T, v6 bool) {
		s, c := hosts.Pair(t, "S", "C")
		if err := c.Sysctl("net/ipv4/tcp_retries2", "4"); err != nil {
			t.Fatal(err)
		}
		_, ap := startRedis(t, s, c, addrOf(s, v6), 0)
		nsC := hosts.Netns(t, c)
		w := startWatch(t)
		ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
		defer cancel()
		cli := c.Command("/usr/bin/redis-cli", "-h", ap.Addr().String(), "-p", "6379", "-r", "60", "-i", "0.2", "PING")
		cliDone := make(chan string, 1)
		go func() {
			out, _ := runUntil(ctx, cli)
			cliDone <- out
		}()
		time.Sleep(time.Second) // a few PINGs answered
		undo, err := c.DropFrom(ap.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer undo()
		out := <-cliDone
		all := w.stop(t, nsC)
		logNarratives(t, "tcpwatch", all)
		t.Logf("redis-cli: %s", lastLines(out, 2))

		var stalled []narrativeJSON
		for _, n := range all {
			if n.Verdict == "stalled" && n.RPort == ap.Port() {
				stalled = append(stalled, n)
			}
		}
		if len(stalled) == 0 {
			t.Fatalf("no stalled line for redis-cli's connection to %s", ap)
		}
		last := stalled[len(stalled)-1]
		t.Logf("%s", last.Summary)
		in := 0
		for _, d := range last.Drops {
			if d.Direction == "in" && d.Reason == "NETFILTER_DROP" && d.Hook == "INPUT" {
				in += d.Count
			}
		}
		if in == 0 || last.LeftHost == nil || *last.LeftHost != last.Retransmits ||
			!strings.Contains(last.Summary, "the peer is answering") || last.Comm != "redis-cli" {
			t.Errorf("stalled: drops %+v left_host %v retransmits %d comm %q: %s", last.Drops, last.LeftHost, last.Retransmits, last.Comm, last.Summary)
		}
	})
}
