package tracer

// Privileged tests of the kernel half: they load the real programs, drive
// real sockets and read the raw records (bpf.TcpwatchEvent), so they see
// every field of record.h whether or not the decoder uses it yet.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/bpf"
	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
)

type rawCollector struct {
	tr   *Tracer
	mu   sync.Mutex
	evs  []bpf.TcpwatchEvent
	done chan struct{}
}

// startRaw starts a tracer and keeps every raw record it sends.
func startRaw(tb testing.TB, cfg Config) *rawCollector {
	tb.Helper()
	tr, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	c := &rawCollector{tr: tr, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		var rec ringbuf.Record
		for {
			// With All, records come without a wakeup: poll.
			tr.reader.SetDeadline(time.Now().Add(PollInterval))
			err := tr.reader.ReadInto(&rec)
			if tr.stopped.Load() {
				return // Stop leaves the reader open until Close
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				return
			}
			var ev bpf.TcpwatchEvent
			if len(rec.RawSample) < int(unsafe.Sizeof(ev)) {
				continue
			}
			ev = *(*bpf.TcpwatchEvent)(unsafe.Pointer(&rec.RawSample[0]))
			c.mu.Lock()
			c.evs = append(c.evs, ev)
			c.mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		tr.Stop()
		<-c.done
		tr.Close()
	})
	return c
}

func (c *rawCollector) matching(pred func(*bpf.TcpwatchEvent) bool) []bpf.TcpwatchEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []bpf.TcpwatchEvent
	for i := range c.evs {
		if pred(&c.evs[i]) {
			out = append(out, c.evs[i])
		}
	}
	return out
}

func (c *rawCollector) wait(tb testing.TB, d time.Duration, what string, pred func(*bpf.TcpwatchEvent) bool) bpf.TcpwatchEvent {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		if m := c.matching(pred); len(m) > 0 {
			return m[0]
		}
		if time.Now().After(deadline) {
			c.dump(tb)
			tb.Fatalf("no %s within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *rawCollector) dump(tb testing.TB) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.evs {
		tb.Logf("kind=%d %d>%d %d->%d flags=%#x pid=%d src=%d inode=%d cookie=%x probes=%d retr=%d err=%d",
			e.Kind, e.Sport, e.Dport, e.OldState, e.State, e.Flags, e.Pid, e.OwnerSource, e.Inode, e.Cookie,
			e.ProbesOut, e.Retransmits, e.SkErr)
	}
}

// TCP states (include/net/tcp_states.h).
const (
	stEstablished = 1
	stSynSent     = 2
	stFinWait1    = 4
	stClose       = 7
	stListen      = 10
)

// socketInode is the N of "socket:[N]" in /proc/self/fd for the connection.
func socketInode(tb testing.TB, c syscall.Conn) uint32 {
	tb.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var link string
	var lerr error
	rc.Control(func(fd uintptr) { link, lerr = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)) })
	if lerr != nil {
		tb.Fatal(lerr)
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 32)
	if err != nil {
		tb.Fatalf("fd link %q: %v", link, err)
	}
	return uint32(n)
}

func port(a net.Addr) uint16 { return uint16(a.(*net.TCPAddr).Port) }

func sysctlU8(tb testing.TB, name string) (uint8, bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 8)
	if err != nil {
		tb.Fatal(err)
	}
	return uint8(v), true
}

// A connect()ed socket's records name the connecting process (source
// CONNECT, kept when the same process closes it), carry the socket's inode
// while a file holds it, and are flagged orphan once nobody does.
func TestKernelConnectOwnerAndInode(t *testing.T) {
	testkit.RequirePrivileged(t)
	col := startRaw(t, Config{All: true})
	c, _ := testkit.Loopback(t)
	ino := socketInode(t, c)
	cli := port(c.LocalAddr())
	c.Close()

	me := uint32(os.Getpid())
	est := col.wait(t, 5*time.Second, "SYN_SENT -> ESTABLISHED", func(e *bpf.TcpwatchEvent) bool {
		return e.Kind == uint8(bpf.TcpwatchTwEventKindTW_EV_STATE) && e.Sport == cli && e.OldState == stSynSent && e.State == stEstablished
	})
	if est.Pid != me || est.OwnerSource != uint8(bpf.TcpwatchTwOwnerSourceTW_OWNER_CONNECT) || est.Inode != ino || est.Cookie == 0 {
		t.Errorf("connect: pid %d (want %d) source %d inode %d (want %d) cookie %x", est.Pid, me, est.OwnerSource, est.Inode, ino, est.Cookie)
	}
	if est.Flags&uint16(bpf.TcpwatchTwEventFlagTW_F_ORPHAN) != 0 {
		t.Error("a socket held by a file is flagged orphan")
	}
	synRetries, _ := sysctlU8(t, "tcp_syn_retries")
	orphanRetries, _ := sysctlU8(t, "tcp_orphan_retries")
	linear, ok := sysctlU8(t, "tcp_syn_linear_timeouts")
	if !ok {
		linear = 0
	}
	if est.SynRetries != synRetries || est.OrphanRetries != orphanRetries || est.SynLinearTimeouts != linear {
		t.Errorf("syn_retries %d orphan_retries %d syn_linear_timeouts %d, want %d %d %d",
			est.SynRetries, est.OrphanRetries, est.SynLinearTimeouts, synRetries, orphanRetries, linear)
	}
	fin := col.wait(t, 5*time.Second, "ESTABLISHED -> FIN_WAIT1", func(e *bpf.TcpwatchEvent) bool {
		return e.Kind == uint8(bpf.TcpwatchTwEventKindTW_EV_STATE) && e.Cookie == est.Cookie && e.State == stFinWait1
	})
	if fin.Pid != me || fin.OwnerSource != uint8(bpf.TcpwatchTwOwnerSourceTW_OWNER_CONNECT) || fin.Inode != ino {
		t.Errorf("close by the connecting process: pid %d source %d inode %d", fin.Pid, fin.OwnerSource, fin.Inode)
	}
	end := col.wait(t, 5*time.Second, "-> CLOSE", func(e *bpf.TcpwatchEvent) bool {
		return e.Kind == uint8(bpf.TcpwatchTwEventKindTW_EV_STATE) && e.Cookie == est.Cookie && e.State == stClose
	})
	if end.Flags&uint16(bpf.TcpwatchTwEventFlagTW_F_ORPHAN) == 0 || end.Inode != 0 {
		t.Errorf("after close(): flags %#x inode %d, want orphan and no inode", end.Flags, end.Inode)
	}
}

// Listening sockets are told even without --all, with their owner, so
// user space can name the owner of the connections they accept.
func TestKernelListenRecordWithOwner(t *testing.T) {
	testkit.RequirePrivileged(t)
	col := startRaw(t, Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := port(ln.Addr())
	ino := socketInode(t, ln.(*net.TCPListener))
	ln.Close()
	l := col.wait(t, 5*time.Second, "CLOSE -> LISTEN", func(e *bpf.TcpwatchEvent) bool {
		return e.Kind == uint8(bpf.TcpwatchTwEventKindTW_EV_STATE) && e.Sport == p && e.State == stListen
	})
	comm := unix.ByteSliceToString(l.Comm[:])
	if l.Pid != uint32(os.Getpid()) || l.OwnerSource != uint8(bpf.TcpwatchTwOwnerSourceTW_OWNER_LISTEN) || comm == "" || l.Inode != ino {
		t.Errorf("listen: pid %d source %d comm %q inode %d (want %d)", l.Pid, l.OwnerSource, comm, l.Inode, ino)
	}
	col.wait(t, 5*time.Second, "LISTEN -> CLOSE", func(e *bpf.TcpwatchEvent) bool {
		return e.Kind == uint8(bpf.TcpwatchTwEventKindTW_EV_STATE) && e.Sport == p && e.OldState == stListen && e.State == stClose
	})
}

// The keepalive path on an accepted socket (no owner storage, its cookie
// never asked for by anyone but tcpwatch's -> ESTABLISHED): every probe,
// then the kill, each with the cookie its CLOSE record has; no owner, which
// only task context can tell.
func TestKernelKeepaliveOnAcceptedSocket(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := hosts.Pair(t, "a", "b")
	col := startRaw(t, Config{})
	_, server := hosts.Connect(t, a, b, 7101)
	testkit.Keepalive(t, server, 1, 1, 3)
	undo, err := b.Blackhole(a.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	if _, rerr := server.Read(make([]byte, 1)); !errors.Is(rerr, syscall.ETIMEDOUT) {
		t.Fatalf("read: %v, want ETIMEDOUT", rerr)
	}
	sp, cp := port(server.LocalAddr()), port(server.RemoteAddr())
	closed := col.wait(t, 5*time.Second, "-> CLOSE with ETIMEDOUT", func(e *bpf.TcpwatchEvent) bool {
		return e.Kind == uint8(bpf.TcpwatchTwEventKindTW_EV_STATE) && e.Sport == sp && e.Dport == cp && e.State == stClose
	})
	if closed.Cookie == 0 || closed.SkErr != int32(unix.ETIMEDOUT) {
		t.Fatalf("CLOSE record cookie %x sk_err %d", closed.Cookie, closed.SkErr)
	}
	ka := col.matching(func(e *bpf.TcpwatchEvent) bool {
		return e.Kind == uint8(bpf.TcpwatchTwEventKindTW_EV_KEEPALIVE) && e.Sport == sp && e.Dport == cp
	})
	var probes []uint8
	killed := false
	for _, e := range ka {
		if e.Cookie != closed.Cookie {
			t.Errorf("keepalive record cookie %x, CLOSE record's %x", e.Cookie, closed.Cookie)
		}
		if e.Pid != 0 || e.OwnerSource != uint8(bpf.TcpwatchTwOwnerSourceTW_OWNER_NONE) {
			t.Errorf("timer record owner %d source %d: the timer runs in no owner's context", e.Pid, e.OwnerSource)
		}
		if e.Flags&uint16(bpf.TcpwatchTwEventFlagTW_F_KA_PROBE) != 0 {
			probes = append(probes, e.ProbesOut)
		}
		if e.Flags&uint16(bpf.TcpwatchTwEventFlagTW_F_KA_KILLED) != 0 {
			killed = true
		}
	}
	if fmt.Sprint(probes) != "[1 2 3]" || !killed {
		col.dump(t)
		t.Errorf("probes %v killed %v, want [1 2 3] then a kill", probes, killed)
	}
}

// slicesHas says whether a hook chose the program.
func slicesHas(hooks []*Hook, prog string) bool {
	for _, h := range hooks {
		for _, p := range h.Chosen {
			if p == prog {
				return true
			}
		}
	}
	return false
}

// Every RTO retransmission is reported exactly once, whichever path saw
// it: on 6.17+ the tracepoint fires for every attempt, failed or not, and
// the retransmission timer's window adds nothing; before 6.17 a
// retransmission that fails locally reaches no tracepoint and the timer's
// window reports it (FROM_TIMER).
func TestKernelRetransmitNotDoubledFromTimer(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := hosts.Pair(t, "a", "b")
	if err := a.Sysctl("net/ipv4/tcp_retries2", "3"); err != nil {
		t.Fatal(err)
	}
	col := startRaw(t, Config{})
	errVariant := slicesHas(col.tr.Hooks, bpf.TcpwatchProgTwRetransmitErr)
	client, _ := hosts.Connect(t, a, b, 7102)
	undo, err := a.Blackhole(b.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	if _, err := client.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	cp := port(client.LocalAddr())
	col.wait(t, 20*time.Second, "-> CLOSE after the retransmission budget", func(e *bpf.TcpwatchEvent) bool {
		return e.Kind == uint8(bpf.TcpwatchTwEventKindTW_EV_STATE) && e.Sport == cp && e.State == stClose
	})
	retr := col.matching(func(e *bpf.TcpwatchEvent) bool {
		return e.Kind == uint8(bpf.TcpwatchTwEventKindTW_EV_RETRANSMIT) && e.Sport == cp
	})
	if len(retr) < 2 {
		col.dump(t)
		t.Fatalf("%d retransmit records, want the RTO retransmissions", len(retr))
	}
	seen := map[uint8]int{}
	for _, e := range retr {
		seen[e.Retransmits]++
		if errVariant && e.Flags&uint16(bpf.TcpwatchTwEventFlagTW_F_FROM_TIMER) != 0 {
			t.Errorf("retransmission %d reported from the timer although the tracepoint sees every attempt", e.Retransmits)
		}
	}
	for n, times := range seen {
		if times != 1 {
			col.dump(t)
			t.Errorf("retransmission #%d reported %d times", n, times)
		}
	}
}

// Losses counts what the kernel skipped: per program, exactly the
// recursion misses the kernel reports for it (as bpftool prog show does),
// for every attached program.
func TestKernelLossesIncludeRecursionMisses(t *testing.T) {
	testkit.RequirePrivileged(t)
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	col := startRaw(t, Config{All: true})
	tr := col.tr

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go testkit.AcceptAll(ln, func(c net.Conn) {
		c.Close()
	})
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000; i++ {
				if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
					c.Close()
				}
			}
		}()
	}
	wg.Wait()

	// The kernel's own figures, read independently by program ID.
	independent := func() map[string]ebpf.ProgramStats {
		out := map[string]ebpf.ProgramStats{}
		for name, p := range tr.attached {
			info, err := p.Info()
			if err != nil {
				t.Fatal(err)
			}
			id, _ := info.ID()
			q, err := ebpf.NewProgramFromID(id)
			if err != nil {
				t.Fatal(err)
			}
			st, err := q.Stats()
			q.Close()
			if err != nil {
				t.Fatal(err)
			}
			out[name] = *st
		}
		return out
	}
	before := independent()
	l, err := tr.Losses()
	if err != nil {
		t.Fatal(err)
	}
	after := independent()

	var want []string
	for _, h := range tr.Hooks {
		if h.Attached {
			want = append(want, h.Chosen...)
		}
	}
	if len(l.RecursionByProgram) != len(want) {
		t.Errorf("per-program misses for %v, attached %v", l.RecursionByProgram, want)
	}
	var sum uint64
	for _, name := range want {
		got, ok := l.RecursionByProgram[name]
		if !ok {
			t.Errorf("no recursion count for %s", name)
		}
		if got < before[name].RecursionMisses || got > after[name].RecursionMisses {
			t.Errorf("%s: %d recursion misses, the kernel says %d..%d", name, got,
				before[name].RecursionMisses, after[name].RecursionMisses)
		}
		sum += got
	}
	if l.Recursion != sum {
		t.Errorf("Recursion %d, sum of programs %d", l.Recursion, sum)
	}
	if rc := after[bpf.TcpwatchProgTwSetState].RunCount; rc < 20000 {
		t.Errorf("tw_set_state ran %d times for 20000 connections: the churn did not reach it", rc)
	}
	if later, err := tr.Losses(); err != nil || later.Total() < l.Total() || later.Total() != later.RingFull+later.Recursion {
		t.Errorf("losses read again: %+v (%v), after %+v: a total that shrank or is not its parts' sum", later, err, l)
	}
	t.Logf("losses: ring full %d, recursion %d %v", l.RingFull, l.Recursion, l.RecursionByProgram)
}

// On a kernel older than the minimum a load failure is explained as such,
// in one line that names what the verifier missed, not reported as a bug.
func TestBelowMinimumError(t *testing.T) {
	ki := &KernelInfo{Release: "5.10.0-32-amd64"}
	ve := &ebpf.VerifierError{Cause: unix.EINVAL, Log: []string{
		"6: (85) call bpf_sk_storage_get#107",
		"unknown func bpf_sk_storage_get#107",
		"processed 6 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0",
	}}
	msg := belowMinimumError(ki, fmt.Errorf("load program: %w", ve)).Error()
	for _, want := range []string{"kernel 5.10.0-32-amd64 is older than " + MinKernel, `"unknown func bpf_sk_storage_get#107"`, "5.11"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") || strings.Contains(msg, "report") {
		t.Errorf("%q: want one line, not a bug report", msg)
	}
}

// inet6_csk_xmit's extent comes from /proc/kallsyms: a function's worth
// of code, not the rest of the kernel.
func TestInet6CskXmitExtent(t *testing.T) {
	testkit.RequirePrivileged(t)
	start, end := ksymExtent("/proc/kallsyms", "inet6_csk_xmit")
	if start == 0 || end <= start || end-start > 1<<14 {
		t.Fatalf("inet6_csk_xmit at [%#x, %#x): want a function's extent", start, end)
	}
	t.Logf("inet6_csk_xmit: %d bytes at %#x", end-start, start)
	if s, e := ksymExtent("/proc/kallsyms", "no_such_function_tcpwatch"); s != 0 || e != 0 {
		t.Errorf("a missing function has an extent [%#x, %#x)", s, e)
	}
}
