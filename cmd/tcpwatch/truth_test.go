package main

// End-to-end tests of issue 17: every field of a narrative is what the
// kernel saw when it decided, with real applications (Debian's python3 and
// curl) in lab namespaces and the real tcpwatch command.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/lab/netlab"
	"github.com/tcpwatch/tcpwatch/output"
)

const python3 = "/usr/bin/python3"

// startPython runs script with python3 in h, and waits for the line it
// prints to say it is ready. The rest of its output is returned by the
// channel, line by line.
func startPython(t *testing.T, h *netlab.Host, ready, script string, args ...string) (*testkit.Process, <-chan string) {
	t.Helper()
	requireInstalled(t, python3, "python3")
	p := testkit.Start(t, h.Command(python3, append([]string{"-c", script}, args...)...), false)
	select {
	case l := <-p.Lines:
		if l != ready {
			t.Fatalf("python3 said %q, want %q (stderr %s)", l, ready, p.Stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("python3 did not say %q within 10s (stderr %s)", ready, p.Stderr.String())
	}
	return p, p.Lines
}

// leaderGoneServer accepts one connection and hands it to a thread named
// closer-thread; the main thread, named truth-main, then exits alone
// (SYS_exit, not exit_group), so the process lives on in that one thread.
// Killed, its files are closed by closer-thread: the kernel's comm in that
// task is the thread's, while ps and /proc/PID/comm name the process
// truth-main, as for redis-server's bio_aof_fsync.
const leaderGoneServer = `
import ctypes, os, socket, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
libc.prctl(PR_SET_NAME, b"truth-main", 0, 0, 0)
ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ln.bind((sys.argv[1], int(sys.argv[2])))
ln.listen(8)
print("listening", flush=True)
conn, _ = ln.accept()
def hold():
    libc.prctl(PR_SET_NAME, b"closer-thread", 0, 0, 0)
    print("holding", flush=True)
    while True:
        time.sleep(1)
threading.Thread(target=hold).start()
time.sleep(0.3)
libc.syscall({"x86_64": 60, "aarch64": 93}[os.uname().machine], 0)
`

// The owner of a connection is named by its process (the thread-group
// leader's comm), not by the thread that happened to close its files.
func TestProcessNameNotThreadName(t *testing.T) {
	testkit.RequirePrivileged(t)
	s, c := hosts.Pair(t, "S", "C")
	nsS := hosts.Netns(t, s)
	ap := netip.AddrPortFrom(s.Addr4(), 7017)
	w := startWatch(t)
	srv, conn := handedServer(t, s, c, ap, leaderGoneServer)
	pid := srv.Process.Pid
	// Wait until the main thread is gone: the leader a zombie, the
	// process alive in closer-thread.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "\nState:\tZ") && strings.Contains(string(b), "\nThreads:\t2\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the main thread did not exit: %s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "truth-main" {
		t.Fatalf("/proc/%d/comm = %q (%v), want truth-main", pid, comm, err)
	}
	if n := killedStory(t, w, nsS, killAndWait(t, srv), ap, conn); int(n.PID) != pid || n.Comm != "truth-main" || n.Thread != "closer-thread" || n.ExitSignal != 9 {
		t.Errorf("local_process_exited pid=%d comm=%q thread=%q signal=%d, want pid %d comm truth-main (the process) thread closer-thread (the one that closed it), signal 9",
			n.PID, n.Comm, n.Thread, n.ExitSignal, pid)
	}
}

// heldClient is psql or redis-cli in a black hole: it sends a request,
// waits for the answer, and when the kernel gives up (ETIMEDOUT) reports
// the error and closes its socket at once.
const heldClient = `
import errno, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(None)
print("connected", s.getsockname()[1], flush=True)
sys.stdin.readline()
s.sendall(b"SELECT 1;\n")
try:
    s.recv(1)
    print("answered", flush=True)
except OSError as e:
    print("error", errno.errorcode.get(e.errno, e.errno), flush=True)
s.close()
time.sleep(1)
`

// A client that gets ETIMEDOUT and closes its socket is told as the kernel
// decided: not an orphan, tcp_retries2's budget, its errno; and each
// stalled line's projected give-up is the kernel's actual one, within the
// timer wheel's slack.
func TestClientTimesOutThenCloses(t *testing.T) {
	testkit.RequirePrivileged(t)
	s, c := hosts.Pair(t, "S", "C")
	nsC := hosts.Netns(t, c)
	if err := c.Sysctl("net.ipv4.tcp_retries2", "3"); err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(s.Addr4(), 5432)
	silentServer(t, s, ap)
	w := startWatch(t)
	cli, lines := startPythonStdin(t, c, heldClient, ap.Addr().String(), strconv.Itoa(int(ap.Port())))
	first := <-lines
	port, ok := strings.CutPrefix(first, "connected ")
	if !ok {
		t.Fatalf("client said %q", first)
	}
	undo, err := s.Blackhole(c.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	io.WriteString(cli.Stdin, "go\n")
	var said string
	select {
	case said = <-lines:
	case <-time.After(20 * time.Second):
		t.Fatal("the client saw nothing within 20s: the kernel should give up after about 6s")
	}
	if said != "error ETIMEDOUT" {
		t.Errorf("the client saw %q, want error ETIMEDOUT", said)
	}
	time.Sleep(1500 * time.Millisecond)
	all := w.stop(t, nsC)
	logNarratives(t, "tcpwatch", all)
	testkit.OneStory(t, "tcpwatch", all, told)
	lport, _ := strconv.Atoi(port)
	got := of(all, tuple{c.Addr4().String(), uint16(lport), ap.Addr().String(), ap.Port()})
	if len(got) < 2 {
		t.Fatalf("client side: %v, want stalled lines and retransmit_timeout", verdicts(got))
	}
	final := got[len(got)-1]
	if final.Verdict != "retransmit_timeout" || final.Orphan || final.BudgetBy != "tcp_retries2" || final.Errno != "ETIMEDOUT" || final.Comm != "python3" {
		t.Errorf("final %s orphan=%v budget_setting=%s errno=%s comm=%s, want retransmit_timeout of a socket python3 held (tcp_retries2, ETIMEDOUT)",
			final.Verdict, final.Orphan, final.BudgetBy, final.Errno, final.Comm)
	}
	end := parseTime(t, final.Time)
	for _, n := range got[:len(got)-1] {
		if n.Verdict != "stalled" {
			t.Errorf("%s before the final", n.Verdict)
			continue
		}
		at := parseTime(t, n.Time).Add(time.Duration(n.GiveUpInMs) * time.Millisecond)
		giveUpIn := time.Duration(n.GiveUpInMs) * time.Millisecond
		// Milliseconds in JSON, and the timer wheel's slack: up to an
		// eighth of the time to expiry late.
		if d := end.Sub(at); d < -2*time.Millisecond || d > giveUpIn/8+50*time.Millisecond {
			t.Errorf("stalled at %s (retrans %d, RTOs %v) projected the end at %s; it came at %s: %v off",
				n.Time, n.Retransmits, n.RTOsMs, at.Format("15:04:05.000"), end.Format("15:04:05.000"), d)
		} else {
			t.Logf("stalled retrans=%d giveup_in=%v: the end came %v after the projection", n.Retransmits, giveUpIn, d)
		}
	}
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// startPythonStdin runs script with python3 in h, with a pipe to its
// standard input; its output comes line by line.
func startPythonStdin(t *testing.T, h *netlab.Host, script string, args ...string) (*testkit.Process, <-chan string) {
	t.Helper()
	requireInstalled(t, python3, "python3")
	p := testkit.Start(t, h.Command(python3, append([]string{"-c", script}, args...)...), true)
	return p, p.Lines
}

// abandoningClient connects with a socket timeout, as client libraries do,
// and closes the socket when it expires.
const abandoningClient = `
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[3]))
print("connecting", flush=True)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected", flush=True)
except socket.timeout:
    print("timeout", s.getsockname()[1], flush=True)
s.close()
`

// Applications give up on connect() long before tcp_syn_retries' budget
// (127 s by default): curl --connect-timeout 2 and a python3 client with a
// 1.5 s socket timeout, to a black-holed host, are each told as a failed
// connect: the SYN retransmissions seen, how long the application waited,
// the budget it did not wait for.
func TestApplicationConnectTimeout(t *testing.T) {
	testkit.RequirePrivileged(t)
	requireInstalled(t, "/usr/bin/curl", "curl")
	s, c := hosts.Pair(t, "S", "C")
	nsC := hosts.Netns(t, c)
	// Two peers (S's IPv4 and IPv6 addresses), so that the two failed
	// connects are two incidents, each told in full, not one folded.
	for _, peer := range []netip.Addr{c.Addr4(), c.Addr6()} {
		undo, err := s.Blackhole(peer)
		if err != nil {
			t.Fatal(err)
		}
		defer undo()
	}
	w := startWatch(t)

	curlAt := netip.AddrPortFrom(s.Addr4(), 8080)
	curl := c.Command("/usr/bin/curl", "-sS", "--connect-timeout", "2", "http://"+curlAt.String()+"/")
	var curlErr lockedBuffer
	curl.Stderr = &curlErr
	start := time.Now()
	err := curl.Run()
	curlWaited := time.Since(start)
	// Exit status 28: CURLE_OPERATION_TIMEDOUT, its connect timeout.
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 28 {
		t.Fatalf("curl: %v (%s), want exit status 28, its connect timeout", err, curlErr.String())
	}

	pyAt := netip.AddrPortFrom(s.Addr6(), 5432)
	_, lines := startPython(t, c, "connecting", abandoningClient, pyAt.Addr().String(), strconv.Itoa(int(pyAt.Port())), "1.5")
	var pyPort int
	select {
	case l := <-lines:
		p, ok := strings.CutPrefix(l, "timeout ")
		if !ok {
			t.Fatalf("python3 said %q, want timeout", l)
		}
		pyPort, _ = strconv.Atoi(p)
	case <-time.After(10 * time.Second):
		t.Fatal("python3's connect did not time out within 10s")
	}
	time.Sleep(500 * time.Millisecond)
	all := w.stop(t, nsC)
	logNarratives(t, "tcpwatch", all)
	testkit.OneStory(t, "tcpwatch", all, told)

	check := func(who string, got []narrativeJSON, waited time.Duration, comm string) {
		t.Helper()
		if len(got) != 1 {
			t.Errorf("%s: %v, want one connect_abandoned", who, verdicts(got))
			return
		}
		n := got[0]
		outage := time.Duration(n.OutageMs) * time.Millisecond
		if n.Verdict != "connect_abandoned" || !n.Final || n.Comm != comm || n.Errno != "" || n.Retransmits < 1 ||
			n.BudgetBy != "tcp_syn_retries" || time.Duration(n.BudgetMs)*time.Millisecond <= outage ||
			(outage-waited).Abs() > 300*time.Millisecond {
			t.Errorf("%s: %s final=%v comm=%s errno=%q retransmits=%d outage=%v budget=%dms (%s), want connect_abandoned by %s after about %v, SYN retransmissions, inside tcp_syn_retries' budget",
				who, n.Verdict, n.Final, n.Comm, n.Errno, n.Retransmits, outage, n.BudgetMs, n.BudgetBy, comm, waited)
		}
	}
	var curlSide []narrativeJSON
	for _, n := range all {
		if n.RAddr == curlAt.Addr().String() && n.RPort == curlAt.Port() {
			curlSide = append(curlSide, n)
		}
	}
	check("curl", curlSide, min(curlWaited, 2*time.Second), "curl")
	check("python3", of(all, tuple{c.Addr6().String(), uint16(pyPort), pyAt.Addr().String(), pyAt.Port()}), 1500*time.Millisecond, "python3")
}

// closingClient sends a request into a black hole and closes its socket
// while the request is being retransmitted: the kernel finishes the
// connection alone, an orphan.
const closingClient = `
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print("connected", s.getsockname()[1], flush=True)
sys.stdin.readline()
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
time.sleep(0.5)
s.close()
print("closed", flush=True)
time.sleep(60)
`

// An orphan found at start-up (tcpwatch started mid-outage, after the
// application closed its socket) is told as one from its first line: no
// process, tcp_orphan_retries' budget, and a projected give-up that holds
// to the kernel's actual one.
func TestOrphanFoundAtStartup(t *testing.T) {
	testkit.RequirePrivileged(t)
	s, c := hosts.Pair(t, "S", "C")
	nsC := hosts.Netns(t, c)
	if err := c.Sysctl("net.ipv4.tcp_orphan_retries", "3"); err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(s.Addr4(), 8080)
	silentServer(t, s, ap)
	cli, lines := startPythonStdin(t, c, closingClient, ap.Addr().String(), strconv.Itoa(int(ap.Port())))
	port, ok := strings.CutPrefix(<-lines, "connected ")
	if !ok {
		t.Fatal("the client did not connect")
	}
	undo, err := s.Blackhole(c.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	io.WriteString(cli.Stdin, "go\n")
	if l := <-lines; l != "closed" {
		t.Fatalf("client said %q", l)
	}
	w := startWatch(t)
	// tcp_orphan_retries=3: 3s from the first retransmission, the kill at
	// the timer's expiry past it, about 6.2s after the request.
	time.Sleep(8 * time.Second)
	all := w.stop(t, nsC)
	logNarratives(t, "tcpwatch", all)
	testkit.OneStory(t, "tcpwatch", all, told)
	lport, _ := strconv.Atoi(port)
	got := of(all, tuple{c.Addr4().String(), uint16(lport), ap.Addr().String(), ap.Port()})
	if len(got) < 2 || got[len(got)-1].Verdict != "retransmit_timeout" {
		t.Fatalf("client side: %v, want stalled from start-up, then retransmit_timeout", verdicts(got))
	}
	final := got[len(got)-1]
	end := parseTime(t, final.Time)
	for _, n := range got {
		if !n.Orphan || n.BudgetBy != "tcp_orphan_retries" || n.PID != 0 {
			t.Errorf("%s at %s: orphan=%v budget_setting=%s pid=%d, want an orphan on tcp_orphan_retries with no process",
				n.Verdict, n.Time, n.Orphan, n.BudgetBy, n.PID)
		}
		if strings.Contains(n.Explanation, "the application will then get") {
			t.Errorf("%s: an orphan's explanation promises an application an error: %s", n.Verdict, n.Explanation)
		}
		if n.Verdict != "stalled" {
			continue
		}
		giveUpIn := time.Duration(n.GiveUpInMs) * time.Millisecond
		at := parseTime(t, n.Time).Add(giveUpIn)
		if d := end.Sub(at); d < -2*time.Millisecond || d > giveUpIn/8+50*time.Millisecond {
			t.Errorf("stalled at %s (retrans %d, RTOs %v) projected the end at %s; it came at %s: %v off",
				n.Time, n.Retransmits, n.RTOsMs, at.Format("15:04:05.000"), end.Format("15:04:05.000"), d)
		} else {
			t.Logf("stalled retrans=%d giveup_in=%v: the end came %v after the projection", n.Retransmits, giveUpIn, d)
		}
	}
}

// Both ends on this host: a server whose keepalive (1s idle, 1s apart, 3
// probes) ends an idle connection while the path is down, and its client,
// whose next request after the path came back meets the server kernel's
// RST. The client's final is joined with the server's keepalive_timeout
// instead of guessing (no "answering normally", no "rebooted").
func TestPeerEndJoined(t *testing.T) {
	testkit.RequirePrivileged(t)
	s, c := hosts.Pair(t, "S", "C")
	nsS, nsC := hosts.Netns(t, s), hosts.Netns(t, c)
	ap := netip.AddrPortFrom(s.Addr4(), 6379)
	var ln net.Listener
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 3}}
	if err := s.Do(func() (err error) { ln, err = lc.Listen(t.Context(), "tcp", ap.String()); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			accepted <- conn
		}
	}()
	w := startWatch(t)
	var conn net.Conn
	if err := c.Do(func() (err error) {
		conn, err = (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: -1}).Dial("tcp", ap.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srvConn := <-accepted
	defer srvConn.Close()
	undo, err := s.Blackhole(c.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	// Idle 1s, then 3 probes 1s apart: the server's kernel gives up after
	// about 4s. Wait 6s, bring the path back, and send a request.
	time.Sleep(6 * time.Second)
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("PING\r\n"))
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, readErr := conn.Read(make([]byte, 16))
	if !errors.Is(readErr, syscall.ECONNRESET) {
		t.Errorf("the client read %v, want ECONNRESET", readErr)
	}
	time.Sleep(300 * time.Millisecond)
	all := w.stop(t, nsS, nsC)
	logNarratives(t, "tcpwatch", all)
	testkit.OneStory(t, "tcpwatch", all, told)
	client := netip.MustParseAddrPort(conn.LocalAddr().String())
	srvSide := of(all, tupleFrom(ap, client))
	if len(srvSide) == 0 || srvSide[len(srvSide)-1].Verdict != "keepalive_timeout" {
		t.Fatalf("server side: %v, want keepalive_timeout", verdicts(srvSide))
	}
	cliSide := of(all, tupleFrom(client, ap))
	if len(cliSide) != 1 {
		t.Fatalf("client side: %v, want one final", verdicts(cliSide))
	}
	n, kill := cliSide[0], srvSide[len(srvSide)-1]
	before := parseTime(t, n.Time).Sub(parseTime(t, kill.Time))
	if n.Verdict != "peer_reset" && n.Verdict != "peer_lost_state" || n.Errno != "ECONNRESET" {
		t.Errorf("client: %s errno %s, want a reset (ECONNRESET)", n.Verdict, n.Errno)
	}
	if n.PeerVerdict != "keepalive_timeout" || n.PeerNetNS != nsS || (time.Duration(n.PeerEndedMsBefore)*time.Millisecond-before).Abs() > 2*time.Millisecond {
		t.Errorf("client's peer_verdict=%q peer_netns=%d peer_ended_ms_before=%d, want keepalive_timeout in %d, %v before",
			n.PeerVerdict, n.PeerNetNS, n.PeerEndedMsBefore, nsS, before)
	}
	for _, claim := range []string{"answering normally", "rebooted"} {
		if strings.Contains(n.Summary, claim) {
			t.Errorf("client's summary claims %q: %s", claim, n.Summary)
		}
	}
	if !strings.Contains(n.Summary, "keepalive_timeout") {
		t.Errorf("client's summary does not say why: %s", n.Summary)
	}
}

// Healthy connections that predate tcpwatch end without a record in
// default mode, by design: the stats count them apart from connections
// whose end was lost, and nothing was lost.
func TestStatsTellUnseenEndsFromLost(t *testing.T) {
	testkit.RequirePrivileged(t)
	s, c := hosts.Pair(t, "S", "C")
	nsC := hosts.Netns(t, c)
	var conns []*net.TCPConn
	for port := 7100; port < 7105; port++ {
		client, server := hosts.Connect(t, c, s, port)
		conns = append(conns, client, server)
	}
	w := startWatch(t, "--netns", strconv.FormatUint(uint64(nsC), 10))
	for _, conn := range conns {
		conn.Close()
	}
	// The tracker reconciles with the kernel's socket table every 10 s.
	time.Sleep(12 * time.Second)
	w.stop(t, nsC)
	stats := testkit.JSONLines(w.stdout.String(), func(r output.StatsRecord) bool { return r.Type == "stats" })
	if len(stats) != 1 {
		t.Fatalf("%d stats records", len(stats))
	}
	st := stats[0]
	t.Logf("stats: lost %d, reconciled %d, ended_unseen %d, tracked %d", st.Lost, st.Reconciled, st.EndedUnseen, st.Tracked)
	if st.Lost != 0 || st.Reconciled != 0 || st.EndedUnseen != 5 {
		t.Errorf("lost %d, reconciled (end lost) %d, ended_unseen %d; want 0, 0 and the 5 client ends that predate tcpwatch",
			st.Lost, st.Reconciled, st.EndedUnseen)
	}
}

// silentServer listens on ap in host s and holds every connection it
// accepts without ever answering, until the test ends.
func silentServer(t *testing.T, s *netlab.Host, ap netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := s.Do(func() (err error) { ln, err = net.Listen("tcp", ap.String()); return err }); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		held []net.Conn
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		testkit.AcceptAll(ln, func(conn net.Conn) { mu.Lock(); held = append(held, conn); mu.Unlock() })
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
}
