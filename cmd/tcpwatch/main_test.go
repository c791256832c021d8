package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/lab"
	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/output/communityid"
)

// The test binary is also tcpwatch (TCPWATCH_MAIN=1) and the lab's
// applications, so the tests run the real command without building it.
func TestMain(m *testing.M) {
	if args, ok := lab.AgentArgs(os.Args[1:]); ok {
		os.Exit(lab.AgentMain(args))
	}
	if os.Getenv("TCPWATCH_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	code := m.Run()
	removeCollector()
	os.Exit(code)
}

// tcpwatch returns a command that runs tcpwatch with args.
func tcpwatch(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "TCPWATCH_MAIN=1")
	// Output copied into buffers: a descendant holding the pipe after
	// tcpwatch exits (a lab agent) must not hold Wait forever.
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// watcher is a running tcpwatch whose output a test reads.
type watcher struct {
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	done           chan error
}

// startWatcher starts tcpwatch with args; it is killed when the test ends
// if the test did not stop it. (waitRunning waits until it is attached.)
func startWatcher(t *testing.T, args ...string) *watcher {
	t.Helper()
	w := &watcher{done: make(chan error, 1)}
	w.cmd = tcpwatch(t, args...)
	w.cmd.Stdout, w.cmd.Stderr = &w.stdout, &w.stderr
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.done <- w.cmd.Wait() }()
	t.Cleanup(func() {
		if w.cmd.ProcessState == nil {
			w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

// stop ends tcpwatch with SIGINT, as a person would, and returns what it
// printed; it must exit cleanly, without a panic.
func (w *watcher) stop(t *testing.T) string {
	t.Helper()
	w.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("tcpwatch %v: %v: %s", w.cmd.Args, err, w.stderr.String())
		}
	case <-time.After(30 * time.Second):
		w.cmd.Process.Kill()
		<-w.done
		t.Errorf("tcpwatch did not stop within 30s of SIGINT")
	}
	if s := w.stderr.String(); strings.Contains(s, "panic") {
		t.Errorf("tcpwatch panicked: %s", s)
	}
	return w.stdout.String()
}

func TestBadInputIsOneLineAndNonZero(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--no-such-flag"}, 2, "unknown flag"},
		{[]string{"-o", "xml"}, 2, "unknown output format"},
		{[]string{"--duration", "-1s"}, 2, "must not be negative"},
		{[]string{"--ring-size", "1000"}, 2, "power of two"},
		{[]string{"--addr", "not-an-ip"}, 2, "neither a CIDR"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"lab", "run", "no-such-scenario"}, 2, "no scenario"},
		{[]string{"lab", "teleport"}, 2, "unknown lab command"},
		{[]string{"--kernel-btf", "/nonexistent", "check"}, 2, "/nonexistent"},
		{[]string{"--kernel-btf", "/dev/zero"}, 2, "not a regular file"},
		{[]string{"--ring-size", "4294967296"}, 2, "power of two from"},
		{[]string{"--pid", "99999999"}, 2, "pid_max"},
		{[]string{"--pid", "0"}, 2, "not a process id"},
		{[]string{"--addr", ""}, 2, "neither a CIDR"},
		{[]string{"--port", "0"}, 2, "between 1 and 65535"},
		{[]string{"lab", "list", "extra"}, 2, "takes no arguments"},
		{[]string{"top", "extra"}, 2, "top takes no arguments"},
		{[]string{"top", "-o", "json"}, 2, "not with --events or -o json"},
	} {
		var stderr bytes.Buffer
		cmd := tcpwatch(t, tc.args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := cmd.ProcessState.ExitCode()
		first, _, _ := strings.Cut(stderr.String(), "\n")
		if code != tc.code || !strings.HasPrefix(first, "tcpwatch: ") || !strings.Contains(first, tc.want) {
			t.Errorf("%v: exit %d (%v), first line %q; want exit %d and %q", tc.args, code, err, first, tc.code, tc.want)
		}
		if strings.Contains(stderr.String(), "panic") || strings.Contains(stderr.String(), "goroutine ") {
			t.Errorf("%v: panicked: %s", tc.args, stderr.String())
		}
	}
}

func TestNotRoot(t *testing.T) {
	testkit.RequirePrivileged(t) // needs root to drop to nobody
	// The test binary lives in a directory only root may enter: give
	// nobody a copy it can run.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "tcpwatch-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	copyExe := filepath.Join(dir, "tcpwatch")
	if err := os.WriteFile(copyExe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(copyExe, "--duration", "1s")
	cmd.Env = append(os.Environ(), "TCPWATCH_MAIN=1")
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	runErr := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.HasPrefix(stderr.String(), "tcpwatch: not permitted to load BPF programs: run tcpwatch as root") {
		t.Errorf("as nobody: exit %d (%v), stderr %q", code, runErr, stderr.String())
	}
}

func TestCheck(t *testing.T) {
	testkit.RequirePrivileged(t)
	out, err := tcpwatch(t, "check").Output()
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	for _, want := range []string{"btf      /sys/kernel/btf/vmlinux", "ok       tcp_retransmit_skb", "ok       tcp_keepalive_timer",
		"ok       tcp_send_active_reset", "ok       tcp_set_state", "every verdict is available"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "an unknown member") {
		t.Errorf("check finds no member for a TCP timer in this kernel's BTF:\n%s", out)
	}
}

// --duration ends the run with exit 0 and a stats line; so does SIGTERM.
func TestStopsCleanly(t *testing.T) {
	testkit.RequirePrivileged(t)
	out, err := tcpwatch(t, "-o", "json", "--duration", "1s").Output()
	if err != nil {
		t.Fatalf("--duration: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var stats output.StatsRecord
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &stats); err != nil || stats.Type != "stats" {
		t.Fatalf("last line is not stats: %q (%v)", lines[len(lines)-1], err)
	}

	cmd := tcpwatch(t, "--events")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, cmd.Process.Pid)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if !strings.Contains(stdout.String(), "stats: ") {
		t.Errorf("no stats line after SIGTERM: %q", stdout.String())
	}
}

// `tcpwatch --events | head -1`: a closed stdout ends tcpwatch quietly, exit 0.
func TestClosedStdout(t *testing.T) {
	testkit.RequirePrivileged(t)
	cmd := tcpwatch(t, "--events")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Make events until tcpwatch has printed one line.
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
				if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
					c.Close()
				}
				ln.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer close(stop)
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatalf("no event line: %v", err)
	}
	out.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		// Nothing may be on stderr: the capabilities are dropped in
		// this cgo test binary too (caps.go).
		if err != nil || stderr.String() != "" {
			t.Errorf("after its reader went away: %v, stderr %q", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("tcpwatch kept running with a closed stdout")
	}
}

// narrativeJSON is what the end-to-end tests read from tcpwatch -o json.
type narrativeJSON struct {
	output.NarrativeRecord
}

// End to end: the real tcpwatch command, in its default mode (the kernel
// filters what it sends), narrates the lab's scenarios; its JSON carries the
// verdict, the tuple, the owner, the errno and the counts.
func TestEndToEndJSON(t *testing.T) {
	testkit.RequirePrivileged(t)
	type want struct {
		verdict  string
		errno    string
		counts   func(n narrativeJSON) bool
		ownerApp bool // the owner pid is the host's lab application
	}
	retrans := func(n narrativeJSON) bool { return n.Retransmits >= 1 }
	probes := func(n narrativeJSON) bool { return n.Probes >= 2 }
	tests := map[string]map[string][]want{
		"process-crash":        {"A": {{"peer_closed", "EPIPE", nil, true}}, "B": {{"local_process_exited", "", nil, true}}},
		"process-crash-unread": {"A": {{"peer_reset", "ECONNRESET", nil, true}}, "B": {{"local_process_exited", "", nil, true}}},
		"host-down":            {"A": {{"stalled", "", retrans, true}, {"retransmit_timeout", "ETIMEDOUT", retrans, true}}},
		"cable-replug":         {"A": {{"stalled", "", retrans, true}, {"recovered", "", retrans, true}}},
		"host-reboot":          {"A": {{"stalled", "", retrans, true}, {"peer_lost_state", "ECONNRESET", retrans, true}}},
		"keepalive-dead":       {"A": {{"keepalive_probing", "", probes, true}, {"keepalive_timeout", "ETIMEDOUT", probes, true}}},
		"router-unreachable":   {"A": {{"stalled", "", retrans, true}, {"host_unreachable", "EHOSTUNREACH", retrans, true}}},
		"local-abort-unread":   {"A": {{"local_abort", "", nil, true}}, "B": {{"peer_reset", "ECONNRESET", nil, true}}},
		"connect-refused":      {"A": {{"connect_refused", "ECONNREFUSED", nil, true}}},
		"connect-timeout":      {"A": {{"connect_timeout", "ETIMEDOUT", retrans, true}}},
		"local-ports-exhausted": {"A": {{"local_ports_exhausted", "EADDRNOTAVAIL", func(n narrativeJSON) bool {
			return n.Ports != nil && n.Ports.TimeWait >= 1 && n.Ports.RangeLo == 40000 && n.Ports.RangeHi == 40003
		}, true}}},
	}
	names := make([]string, 0, len(tests))
	for name := range tests {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			cmd := tcpwatch(t, "-o", "json")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitRunning(t, cmd.Process.Pid)
			var labRecords []lab.Record
			res, err := lab.Run(context.Background(), name, lab.Options{}, func(r lab.Record) { labRecords = append(labRecords, r) })
			time.Sleep(300 * time.Millisecond)
			cmd.Process.Signal(syscall.SIGINT)
			if werr := cmd.Wait(); werr != nil {
				t.Errorf("tcpwatch: %v: %s", werr, stderr.String())
			}
			defer func() {
				if t.Failed() {
					// What the lab's own tracer and tcpwatch each told.
					t.Logf("lab result: %+v", res)
					for _, r := range labRecords {
						if b, err := json.Marshal(r); err == nil {
							t.Logf("lab: %s", b)
						}
					}
					t.Logf("tcpwatch -o json:\n%s", stdout.String())
				}
			}()
			if err != nil {
				t.Fatalf("lab: %v", err)
			}
			byHost := map[string][]narrativeJSON{}
			for _, n := range testkit.JSONLines(stdout.String(), func(n narrativeJSON) bool { return n.Type == "narrative" }) {
				for host, inodes := range res.NetNS {
					if slices.Contains(inodes, n.NetNS) {
						byHost[host] = append(byHost[host], n)
					}
				}
			}
			for host, ns := range byHost {
				testkit.OneStory(t, host, ns, told)
			}
			// Two ends of one connection: their narratives join on
			// community_id (computed from the kernel's 4-tuple).
			told := map[string]string{}
			for host, wants := range tests[name] {
				got := byHost[host]
				i := 0
				for _, w := range wants {
					for i < len(got) && got[i].Verdict != w.verdict {
						i++
					}
					if i == len(got) {
						t.Errorf("%s: no %s in order among %v", host, w.verdict, verdicts(byHost[host]))
						break
					}
					n := got[i]
					if n.Errno != w.errno {
						t.Errorf("%s %s: errno %q, want %q", host, w.verdict, n.Errno, w.errno)
					}
					if w.counts != nil && !w.counts(n) {
						t.Errorf("%s %s: counts retransmits=%d probes=%d", host, w.verdict, n.Retransmits, n.Probes)
					}
					if w.ownerApp && !slices.Contains(res.PIDs[host], int(n.PID)) {
						t.Errorf("%s %s: owner pid %d (%s), the application is %v", host, w.verdict, n.PID, n.Comm, res.PIDs[host])
					}
					if (n.LPort == 0 && n.Verdict != "local_ports_exhausted") || n.RPort == 0 || n.LAddr == n.RAddr || n.Summary == "" || n.Explanation == "" {
						t.Errorf("%s %s: tuple %s:%d > %s:%d summary %q", host, w.verdict, n.LAddr, n.LPort, n.RAddr, n.RPort, n.Summary)
					}
					ap := func(a string, p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(a), p) }
					if want := communityid.Flow(0, communityid.TCP, ap(n.LAddr, n.LPort), ap(n.RAddr, n.RPort)); n.CommunityID != want || want == "" {
						t.Errorf("%s %s: community_id %q, want %q", host, w.verdict, n.CommunityID, want)
					}
					told[host] = n.CommunityID
					if w.verdict == "stalled" && (n.Final || n.GiveUpInMs <= 0) {
						t.Errorf("stalled: final %v giveup_in_ms %d", n.Final, n.GiveUpInMs)
					}
					i++
				}
			}
			if len(tests[name]) == 2 && told["A"] != told["B"] {
				t.Errorf("A's community_id %q, B's %q: one connection, two ids", told["A"], told["B"])
			}
			if t.Failed() {
				t.Logf("tcpwatch output:\n%s", stdout.String())
			}
		})
	}
}

func verdicts(ns []narrativeJSON) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Verdict)
	}
	return out
}

// waitAttached waits until tcpwatch (pid) holds its BPF links: its
// programs are attached, and the ring buffer keeps what they see until it
// reads them. The links are descriptors "anon_inode:bpf_link"; attaching
// them all takes a few milliseconds, so the count is taken once it has
// stopped growing.
func waitAttached(t *testing.T, pid int) {
	t.Helper()
	count := func() int {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, _ := os.ReadDir(dir)
		n := 0
		for _, fd := range fds {
			if target, err := os.Readlink(dir + "/" + fd.Name()); err == nil && target == "anon_inode:bpf_link" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	last, stable := 0, 0
	for time.Now().Before(deadline) {
		n := count()
		if n > 0 && n == last {
			stable++
			if stable == 3 {
				return
			}
		} else {
			stable = 0
		}
		last = n
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("tcpwatch (pid %d) did not attach within 30s", pid)
}

// waitRunning waits until tcpwatch at pid is attached and hears SIGINT and
// SIGTERM. Every build (cgo or not) drops its capabilities right after it
// starts listening for signals, which can take a second under qemu:
// CAP_BPF leaving its effective set says the handlers are in place.
func waitRunning(t *testing.T, pid int) {
	t.Helper()
	waitAttached(t, pid)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatalf("tcpwatch (pid %d): %v", pid, err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			if hex, ok := strings.CutPrefix(line, "CapEff:\t"); ok {
				eff, err := strconv.ParseUint(hex, 16, 64)
				if err == nil && eff&(1<<unix.CAP_BPF) == 0 {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("tcpwatch (pid %d) kept CAP_BPF 30s after attaching", pid)
}
