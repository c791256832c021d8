package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/output"
)

// Issue #10.5: with a tiny ring and --all, a churn of tens of thousands of
// connections loses most records, among them the ends of connections.
// Their tracker entries must not live forever: once the churn stops, the
// tracker is reconciled with the kernel's socket table, its count falls
// back near zero, and tcpwatch's memory returns near what it was idle.
func TestLossStormMemoryReturns(t *testing.T) {
	testkit.RequirePrivileged(t)
	cmd := tcpwatch(t, "--ring-size", "4096", "--all", "-o", "json")
	// The Go runtime's own account of tcpwatch's heap, one line a
	// collection on stderr: what is live after each, and which were forced
	// (tcpwatch handing memory back, engine/memory.go). disablethp: with
	// transparent huge pages "always" (Debian's kernels, so the kernel
	// matrix's guests) the heap's pages are huge ones, and what the runtime
	// hands back in smaller pieces stays resident until the kernel splits
	// them (go.dev/issue/64332): in a 6.1 guest 14 MiB of huge pages held
	// anonymous memory 15 MiB above idle with 2 MB live and the memory
	// handed back. The test measures what tcpwatch returns, not the
	// kernel's huge-page policy.
	cmd.Env = append(cmd.Env, "GODEBUG=gctrace=1,disablethp=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	var losses atomic.Int64
	lastStats := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<16), 1<<22)
		stats := ""
		for sc.Scan() {
			switch line := sc.Text(); {
			case strings.Contains(line, `"type":"loss"`):
				losses.Add(1)
			case strings.Contains(line, `"type":"stats"`):
				stats = line
			}
		}
		io.Copy(io.Discard, stdout)
		lastStats <- stats
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Idle is measured once tcpwatch is loaded and has read the existing
	// connections: a fixed sleep measured a half-loaded process under qemu.
	waitRunning(t, cmd.Process.Pid)
	time.Sleep(time.Second)
	idle := readMemory(t, cmd.Process.Pid)

	// The storm: 40,000 loopback connections (80,000 tracked ends), as
	// fast as 8 clients go, for at most 60 s.
	const conns = 40000
	idleLive := max(lastLiveHeap(stderr.String()), 0)
	made := churn(t, conns, 8, 60*time.Second)
	peak := readMemory(t, cmd.Process.Pid)
	stormEnd := len(stderr.String())
	if losses.Load() == 0 {
		t.Fatalf("no loss reported with a 4096-byte ring under %d connections: the storm did not happen", made)
	}

	// After the storm: reconciliation runs within a second of the last
	// loss report, then every 10 s; the memory goes back once the records
	// stop (engine/memory.go). What tcpwatch keeps is its anonymous memory
	// (heap, stacks, the runtime's own) at the low point of the collector's
	// cycle: the machine's other connections, which --all tells too, leave
	// garbage that the next cycle takes, and VmRSS also counts tcpwatch's
	// executable (file pages on a host, shared memory in the kernel
	// matrix's initramfs: 17 MiB of a 6.1 guest's 27 MiB idle). So the last
	// 5 s of the 15 are sampled and the least anonymous memory is compared
	// with idle. (In that guest the growth was anonymous all the same:
	// 9.2 -> 20.8 MiB, VmRSS 27.0 -> 39.2.) Whether tcpwatch handed the
	// memory back at all, the runtime itself says (gctrace, below).
	time.Sleep(10 * time.Second)
	after := readMemory(t, cmd.Process.Pid)
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if m := readMemory(t, cmd.Process.Pid); m.anon < after.anon {
			after = m
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tcpwatch: %v: %s", err, stderr.String())
	}
	var stats output.StatsRecord
	if err := json.Unmarshal([]byte(<-lastStats), &stats); err != nil {
		t.Fatalf("no stats record: %v", err)
	}
	gcAfter := stderr.String()[stormEnd:]
	forced := strings.Count(gcAfter, "(forced)")
	live := lastLiveHeap(gcAfter)
	t.Logf("%d connections, %d loss reports; stats: lost %d, tracked %d, reconciled %d, evictions %d; anonymous/file/VmRSS KiB: idle %v, after the storm %v, least in the last 5 of 15 s %v; live heap %d MB idle, %d MB after, %d forced collections after the storm",
		made, losses.Load(), stats.Lost, stats.Tracked, stats.Reconciled, stats.Evictions, idle, peak, after, idleLive, live, forced)
	// tcpwatch hands the storm's memory back itself, once the records stop
	// or the tracker shrinks (debug.FreeOSMemory: a forced collection);
	// without that the runtime keeps the peak's pages until a collection
	// that a quiet tcpwatch may not run for minutes.
	if forced == 0 {
		t.Errorf("no forced collection after the storm: tcpwatch did not hand its memory back")
	}

	// Near zero: other traffic of the host may hold a few connections.
	if stats.Tracked > 500 {
		t.Errorf("%d connections still tracked after the storm ended (reconciled %d): entries whose end was lost stay", stats.Tracked, stats.Reconciled)
	}
	// No check that something was reconciled: with --all the kernel sends
	// a normal lifecycle whole, in one record at its end (bpf/lifecycle.h),
	// so a lost record is a connection the tracker never began, not an
	// entry whose end was lost; what must hold is that nothing stays.
	// Idle plus 12 MiB: the maps keep their grown sizes, the collector
	// its target over what is live.
	const bound = 12 << 10
	if after.anon > idle.anon+bound {
		t.Errorf("anonymous memory %d KiB 15 s after the storm, idle was %d KiB (bound: idle + %d KiB): the storm's memory was not given back", after.anon, idle.anon, bound)
	}
}

// churn makes n loopback connections (connect, one byte each way, the
// server closes first) with the given number of clients, within limit.
func churn(t *testing.T, n, workers int, limit time.Duration) int {
	t.Helper()
	ln, err := testkit.EchoOneByteServer()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var left, made atomic.Int64
	left.Store(int64(n))
	deadline := time.Now().Add(limit)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			for left.Add(-1) >= 0 && time.Now().Before(deadline) {
				c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
				if err != nil {
					continue
				}
				c.Write(b)
				io.ReadFull(c, b)
				io.Copy(io.Discard, c)
				c.Close()
				made.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(made.Load())
}

// gcLine is a line of GODEBUG=gctrace=1: its third heap figure is what the
// collection found live.
var gcLine = regexp.MustCompile(`(?m)^gc \d+ @[0-9.]+s .* \d+->\d+->(\d+) MB`)

// lastLiveHeap is the live heap, MB, after the last collection in trace; -1
// if there is none.
func lastLiveHeap(trace string) int {
	m := gcLine.FindAllStringSubmatch(trace, -1)
	if len(m) == 0 {
		return -1
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// memory is what /proc/PID/status says of a process's resident set, KiB:
// anonymous (its heap, stacks and the runtime's own) and file-backed (its
// executable's pages), which VmRSS adds up (with shared memory).
type memory struct{ anon, file, rss, huge int }

func (m memory) String() string {
	return fmt.Sprintf("%d/%d/%d (huge pages %d)", m.anon, m.file, m.rss, m.huge)
}

func readMemory(t *testing.T, pid int) memory {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var m memory
	fields := map[string]*int{"RssAnon:": &m.anon, "RssFile:": &m.file, "VmRSS:": &m.rss}
	for _, line := range strings.Split(string(b), "\n") {
		for name, v := range fields {
			if rest, ok := strings.CutPrefix(line, name); ok {
				*v, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
				delete(fields, name)
			}
		}
	}
	if len(fields) > 0 {
		t.Fatalf("pid %d: /proc status lacks %v", pid, fields)
	}
	// Transparent huge pages: with THP "always" (Debian's kernels) the
	// heap's pages can be huge ones, which memory handed back in smaller
	// pieces does not shrink until the kernel splits them.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "AnonHugePages:"); ok {
				m.huge, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			}
		}
	}
	return m
}
