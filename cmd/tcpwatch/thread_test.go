package main

// The owner's thread as extra detail (issue 17): a multithreaded server
// killed by a signal is named by its process, and the thread whose exit
// closed the socket by its own name, as the kernel and /proc saw them.

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/lab/netlab"
)

// workerHeldServer is a server whose leader, named truth-server, accepts
// one connection and hands it to a thread named conn-worker, which takes
// a files table of its own (unshare(CLONE_FILES)); the leader then closes
// its copy of the descriptor, so only conn-worker's table holds the
// socket. A third thread, idle-thread, only sleeps. Killed by SIGKILL,
// every thread exits, and the socket is closed by conn-worker's exit
// (exit_files), whatever order the threads die in: the kernel's current
// comm there is conn-worker, its thread-group leader's truth-server, alive
// until the end.
const workerHeldServer = `
import ctypes, os, socket, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME, CLONE_FILES = 15, 0x400
libc.prctl(PR_SET_NAME, b"truth-server", 0, 0, 0)
ln = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ln.bind((sys.argv[1], int(sys.argv[2])))
ln.listen(8)
print("listening", flush=True)
conn, _ = ln.accept()
fd = conn.detach()
moved = threading.Event()
def worker():
    libc.prctl(PR_SET_NAME, b"conn-worker", 0, 0, 0)
    if libc.unshare(CLONE_FILES) != 0:
        print("unshare failed", ctypes.get_errno(), flush=True)
        return
    moved.set()
    while True:
        time.sleep(1)
def idle():
    libc.prctl(PR_SET_NAME, b"idle-thread", 0, 0, 0)
    while True:
        time.sleep(1)
threading.Thread(target=idle, daemon=True).start()
threading.Thread(target=worker, daemon=True).start()
moved.wait()
os.close(fd)
print("holding", flush=True)
while True:
    time.sleep(1)
`

// handedServer starts script in s on ap: a python3 server that says
// "listening", accepts one connection and, once a thread of its own holds
// it, says "holding". It connects from c and waits for that.
func handedServer(t *testing.T, s, c *netlab.Host, ap netip.AddrPort, script string) (*testkit.Process, net.Conn) {
	t.Helper()
	srv, lines := startPython(t, s, "listening", script, ap.Addr().String(), strconv.Itoa(int(ap.Port())))
	var conn net.Conn
	if err := c.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", ap.String(), 2*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	select {
	case l := <-lines:
		if l != "holding" {
			t.Fatalf("server said %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not hand the connection to its thread")
	}
	return srv, conn
}

// killAndWait kills srv with SIGKILL and waits until it is gone.
func killAndWait(t *testing.T, srv *testkit.Process) func() {
	return func() {
		if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		srv.Wait()
	}
}

// killedStory kills the server (kill), stops tcpwatch and returns what it
// told about the server's end of conn, served on ap: one
// local_process_exited.
func killedStory(t *testing.T, w *serverWatch, ns uint32, kill func(), ap netip.AddrPort, conn net.Conn) narrativeJSON {
	t.Helper()
	kill()
	time.Sleep(500 * time.Millisecond)
	all := w.stop(t, ns)
	logNarratives(t, "tcpwatch", all)
	testkit.OneStory(t, "tcpwatch", all, told)
	got := of(all, tupleFrom(ap, netip.MustParseAddrPort(conn.LocalAddr().String())))
	if len(got) != 1 || got[0].Verdict != "local_process_exited" {
		t.Fatalf("server side: %v, want local_process_exited", verdicts(got))
	}
	return got[0]
}

// threadNames reads the comm of each of pid's threads, as /proc shows them.
func threadNames(t *testing.T, pid int) []string {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/comm", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	var names []string
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, strings.TrimSpace(string(b)))
	}
	return names
}

// A multithreaded server killed by SIGKILL: local_process_exited names the
// process (pid, comm = the leader's name) and, as extra detail, the thread
// whose exit closed the socket.
func TestThreadNameOfKilledServer(t *testing.T) {
	testkit.RequirePrivileged(t)
	s, c := hosts.Pair(t, "S", "C")
	nsS := hosts.Netns(t, s)
	ap := netip.AddrPortFrom(s.Addr4(), 7018)
	w := startWatch(t)
	srv, conn := handedServer(t, s, c, ap, workerHeldServer)
	pid := srv.Process.Pid
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "truth-server" {
		t.Fatalf("/proc/%d/comm = %q (%v), want truth-server", pid, comm, err)
	}
	names := threadNames(t, pid)
	if !slices.Contains(names, "conn-worker") || !slices.Contains(names, "idle-thread") || len(names) < 3 {
		t.Fatalf("threads of %d: %q, want truth-server, conn-worker, idle-thread", pid, names)
	}
	t.Logf("pid %d, threads %q", pid, names)
	if n := killedStory(t, w, nsS, killAndWait(t, srv), ap, conn); int(n.PID) != pid || n.Comm != "truth-server" || n.Thread != "conn-worker" || n.ExitSignal != 9 || n.OwnerSource != "close" {
		t.Errorf("local_process_exited pid=%d comm=%q thread=%q signal=%d owner_source=%s, want pid %d comm truth-server thread conn-worker signal 9 from the close",
			n.PID, n.Comm, n.Thread, n.ExitSignal, n.OwnerSource, pid)
	}
}

// redis-server killed by SIGKILL (the field test's shape): its threads
// (bio_close_file, bio_aof_fsync, bio_lazy_free, ...) exit in any order
// and the last one closes the files. The process is redis-server; the
// thread, when one of them closed the client's socket, is that one's name
// as /proc showed it before the kill.
func TestThreadNameOfKilledRedis(t *testing.T) {
	testkit.RequirePrivileged(t)
	s, c := hosts.Pair(t, "S", "C")
	nsS := hosts.Netns(t, s)
	w := startWatch(t)
	srv, ap := startRedis(t, s, c, s.Addr4(), 0)
	conn, err := redisDial(c, ap)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pid := srv.Process.Pid
	names := threadNames(t, pid)
	t.Logf("redis-server pid %d, threads %q", pid, names)
	if len(names) < 2 {
		t.Fatalf("redis-server runs %d thread(s): %q, want its bio threads too", len(names), names)
	}
	kill := func() {
		// startRedis's cleanup waits for it: wait here for its sockets' end.
		if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	n := killedStory(t, w, nsS, kill, ap, conn)
	if int(n.PID) != pid || n.Comm != "redis-server" || n.ExitSignal != 9 {
		t.Errorf("local_process_exited pid=%d comm=%q signal=%d, want pid %d comm redis-server (the process) signal 9", n.PID, n.Comm, n.ExitSignal, pid)
	}
	if n.Thread == "redis-server" || n.Thread != "" && !slices.Contains(names, n.Thread) {
		t.Errorf("thread %q: want one of redis-server's other threads %q, or none (the main thread closed it)", n.Thread, names)
	}
	t.Logf("closed by thread %q", n.Thread)
}

// workerConnect connects from a thread named conn-thread of a process
// named truth-client, to a port where nothing listens: refused.
const workerConnect = `
import ctypes, socket, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
libc.prctl(PR_SET_NAME, b"truth-client", 0, 0, 0)
def connect():
    libc.prctl(PR_SET_NAME, b"conn-thread", 0, 0, 0)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        print("connected", flush=True)
    except OSError as e:
        print("refused" if e.errno == 111 else "error %d" % e.errno, s.getsockname()[1], flush=True)
print("ready", flush=True)
sys.stdin.readline()
th = threading.Thread(target=connect)
th.start()
th.join()
`

// A connection opened by a worker thread: the connect owner is the
// process, its thread the extra detail, from the kernel's connect slot.
func TestThreadNameOfConnectingWorker(t *testing.T) {
	testkit.RequirePrivileged(t)
	s, c := hosts.Pair(t, "S", "C")
	nsC := hosts.Netns(t, c)
	ap := netip.AddrPortFrom(s.Addr4(), 7019)
	w := startWatch(t)
	cli, lines := startPythonStdin(t, c, workerConnect, ap.Addr().String(), strconv.Itoa(int(ap.Port())))
	if l := <-lines; l != "ready" {
		t.Fatalf("client said %q", l)
	}
	pid := cli.Process.Pid
	fmt.Fprintln(cli.Stdin, "go")
	var said string
	select {
	case said = <-lines:
	case <-time.After(10 * time.Second):
		t.Fatal("the client said nothing within 10s")
	}
	port, ok := strings.CutPrefix(said, "refused ")
	if !ok {
		t.Fatalf("client said %q, want refused", said)
	}
	time.Sleep(500 * time.Millisecond)
	all := w.stop(t, nsC)
	logNarratives(t, "tcpwatch", all)
	lport, _ := strconv.Atoi(port)
	got := of(all, tuple{c.Addr4().String(), uint16(lport), ap.Addr().String(), ap.Port()})
	if len(got) != 1 || got[0].Verdict != "connect_refused" {
		t.Fatalf("client side: %v, want connect_refused", verdicts(got))
	}
	if n := got[0]; int(n.PID) != pid || n.Comm != "truth-client" || n.Thread != "conn-thread" || n.OwnerSource != "connect" {
		t.Errorf("connect_refused pid=%d comm=%q thread=%q owner_source=%s, want pid %d comm truth-client thread conn-thread from connect()",
			n.PID, n.Comm, n.Thread, n.OwnerSource, pid)
	}
}
