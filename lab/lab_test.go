package lab

import (
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// The test binary doubles as the lab's application (IsAgent) and, for the
// kill test, as a lab runner that gets killed mid-run.
func TestMain(m *testing.M) {
	if args, ok := AgentArgs(os.Args[1:]); ok {
		os.Exit(AgentMain(args))
	}
	if name := os.Getenv("TCPWATCH_LAB_RUN"); name != "" {
		_, err := Run(context.Background(), name, Options{}, func(Record) {})
		if err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// labNamespaces lists this process's lab namespaces (other test binaries
// may run labs of their own at the same time).
func labNamespaces(t *testing.T, pid int) []string {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), fmt.Sprintf("tw-%d-", pid)) {
			out = append(out, e.Name())
		}
	}
	return out
}

// labProcesses lists live processes whose executable is a lab application.
// labProcesses lists the lab applications still alive whose parent is
// parent (other test binaries may run labs of their own at the same time).
func labProcesses(parent int) []string {
	me := strconv.Itoa(parent)
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		comm, err := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
		if err != nil {
			continue
		}
		c := strings.TrimSpace(string(comm))
		if c == "lab-client" || c == "lab-server" {
			st, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
			if err != nil {
				continue
			}
			// After the comm's closing parenthesis: state, then the parent's pid.
			_, rest, _ := strings.Cut(string(st), ") ")
			f := strings.Fields(rest)
			if len(f) > 1 && f[0] != "Z" && f[1] == me {
				out = append(out, p.Name()+":"+c)
			}
		}
	}
	return out
}

// hostLinks are the veth links the lab would leave in this namespace if it
// leaked (it never creates any here, but a bug could).
func hostLinks(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// Every scenario, run for real: the verdicts of each traced host, the
// error each application saw, and nothing left behind.
func TestScenarios(t *testing.T) {
	testkit.RequirePrivileged(t)
	linksBefore := hostLinks(t)
	// The kernel matrix's guests run the scenarios here, under qemu's TCG,
	// with the margin its lab step gave `tcpwatch lab run` (-lab-timeout).
	var timeout time.Duration
	if v := os.Getenv("TCPWATCH_LAB_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("TCPWATCH_LAB_TIMEOUT=%s: %v", v, err)
		}
		timeout = d
	}
	for _, sc := range Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			var lines []Record
			// The kernel's records, kept to replay a failure through the
			// tracker (a test in tracer/tracker reads this format).
			var recording strings.Builder
			defer func() {
				if t.Failed() {
					for _, d := range digest(recording.String()) {
						t.Logf("records: %s", d)
					}
					for _, l := range lines {
						t.Logf("%s", describe(l))
					}
					t.Logf("recording:\n%s", recording.String())
				}
			}()
			start := time.Now()
			res, err := Run(context.Background(), sc.Name, Options{Record: &recording, Timeout: timeout}, func(r Record) { lines = append(lines, r) })
			elapsed := time.Since(start)
			if os.Getenv("TCPWATCH_LAB_RESULTS") != "" {
				tellResult(sc.Name, res, err, lines, elapsed)
			}
			if err != nil {
				t.Fatalf("run: %v (verdicts %+v)", err, res)
			}
			if !res.OK {
				t.Errorf("verdicts %v, missing or unexpected %v", res.Verdicts, res.Missing)
			}
			for host, want := range sc.AppErrno {
				if !slices.Contains(res.AppErrno[host], want) {
					t.Errorf("%s's application saw %v, want %s", host, res.AppErrno[host], want)
				}
			}
			checkStories(t, lines)
			if check, ok := scenarioChecks[sc.Name]; ok {
				check(t, lines)
			}
			// A scenario whose kernel decides with settings the lab does not
			// shorten (Go's own keepalive) says how long it needs.
			if limit := max(20*time.Second, sc.Timeout, timeout); elapsed > limit {
				t.Errorf("took %v; a shortened scenario must finish in under %v", elapsed, limit)
			}
			if ns := labNamespaces(t, os.Getpid()); len(ns) > 0 {
				t.Errorf("namespaces left behind: %v", ns)
			}
			if ps := labProcesses(os.Getpid()); len(ps) > 0 {
				t.Errorf("processes left behind: %v", ps)
			}
		})
	}
	if after := hostLinks(t); !slices.Equal(linksBefore, after) {
		t.Errorf("links of the test's namespace changed: %v -> %v", linksBefore, after)
	}
}

// tellResult prints one scenario's result on its own line, for the kernel
// matrix (cmd/tools/tcpwatch-kernels), whose guests run the scenarios
// here rather than once more through `tcpwatch lab run`: the lab_result
// record lab run prints, with the narratives told and the run's error.
func tellResult(name string, res *Result, err error, lines []Record, elapsed time.Duration) {
	rec := struct {
		jsonResult
		Narratives int    `json:"narratives"`
		Error      string `json:"error,omitempty"`
		// NoResult: the run failed before it had one (lab run then prints
		// no lab_result); a run that gave up waiting has its result.
		NoResult bool `json:"no_result,omitempty"`
	}{jsonResult: jsonResult{Type: "lab_result", DurationMs: elapsed.Milliseconds(), Result: res}, NoResult: res == nil}
	if res == nil || res.Scenario == "" {
		rec.Result = &Result{Scenario: name}
		if res != nil {
			c := *res
			c.Scenario = name
			rec.Result = &c
		}
	}
	if err != nil {
		rec.Error = err.Error()
	}
	for _, l := range lines {
		if l.Type == "narrative" {
			rec.Narratives++
		}
	}
	b, jerr := json.Marshal(rec)
	if jerr != nil {
		b, _ = json.Marshal(map[string]string{"type": "lab_result", "scenario": name, "error": jerr.Error()})
	}
	fmt.Printf("@@LAB-RESULT %s\n", b)
}

// A lab killed mid-run (SIGKILL: no deferred cleanup runs) leaves its
// namespaces; its applications die with it, and the next run, or
// `tcpwatch lab cleanup`, removes the rest.
func TestCleanupAfterKill(t *testing.T) {
	testkit.RequirePrivileged(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "TCPWATCH_LAB_RUN=host-down")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the run is under way: its hosts exist and its applications run.
	deadline := time.Now().Add(10 * time.Second)
	var apps []string
	for len(apps) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		apps = labProcesses(cmd.Process.Pid)
	}
	if len(apps) < 2 {
		cmd.Process.Kill()
		t.Fatal("the lab run did not start its applications")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	left := labNamespaces(t, cmd.Process.Pid)
	if len(left) == 0 {
		t.Fatal("the killed run left no namespace: the test did not kill it mid-run")
	}
	removed, err := Cleanup()
	for _, ns := range left {
		// Other runs' leftovers (another test binary's, still mounted in
		// some other mount namespace) may fail to go: only this run's count.
		if err != nil && strings.Contains(err.Error(), ns) {
			t.Fatalf("cleanup: %v", err)
		}
	}
	for _, ns := range left {
		if !slices.Contains(removed, ns) {
			t.Errorf("cleanup did not report removing %s (removed %v)", ns, removed)
		}
	}
	if ns := labNamespaces(t, cmd.Process.Pid); len(ns) > 0 {
		t.Errorf("namespaces left after cleanup: %v", ns)
	}
	// The applications die with the lab (Pdeathsig), wherever they were
	// reparented.
	alive := func() (out []string) {
		for _, a := range apps {
			pid, comm, _ := strings.Cut(a, ":")
			if b, err := os.ReadFile("/proc/" + pid + "/comm"); err == nil && strings.TrimSpace(string(b)) == comm {
				out = append(out, a)
			}
		}
		return out
	}
	// ... and the directory of its applications' names.
	if dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("%s%d-*", agentDirPrefix, cmd.Process.Pid))); len(dirs) > 0 {
		t.Errorf("directories left after cleanup: %v", dirs)
	}
	deadline = time.Now().Add(5 * time.Second)
	for len(alive()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if ps := alive(); len(ps) > 0 {
		t.Errorf("applications outlived the killed lab: %v", ps)
	}
}

func describe(r Record) string {
	switch {
	case r.Narrative != nil:
		n := r.Narrative
		return fmt.Sprintf("+%v %s narrative %s %v>%v pid=%d %s errno=%d: %s", r.T, r.Host, n.Verdict, n.Local, n.Remote, n.Owner.PID, n.Owner.Comm, n.Errno, words.Summary(n))
	case r.App != nil:
		return fmt.Sprintf("+%v %s app %s pid=%d: %s %s", r.T, r.Host, r.App.Role, r.App.PID, r.App.What, r.App.Errno)
	}
	return fmt.Sprintf("+%v %s %s %s", r.T, r.Host, r.Type, r.What)
}

func TestScenarioCatalogue(t *testing.T) {
	seen := map[string]bool{}
	rows := map[int]bool{}
	for _, sc := range Scenarios {
		if seen[sc.Name] {
			t.Errorf("duplicate scenario %s", sc.Name)
		}
		seen[sc.Name] = true
		rows[sc.Row] = true
		if sc.Summary == "" || sc.Act == nil {
			t.Errorf("%s: no summary or action", sc.Name)
		}
	}
	for row := 1; row <= 14; row++ {
		if !rows[row] {
			t.Errorf("scenarios.md row %d has no scenario", row)
		}
	}
}

func TestRunRejectsUnknownScenario(t *testing.T) {
	if _, err := Run(context.Background(), "no-such-thing", Options{}, func(Record) {}); err == nil ||
		!strings.Contains(err.Error(), "no scenario") {
		t.Fatalf("got %v", err)
	}
}

// checkStories holds for every scenario: per connection at most one final
// narrative and nothing after it; no kernel-internal errno (ERESTARTSYS and
// kin never reach applications); every stalled narrative's projected
// give-up is the kernel's actual one, the final's time, within the timer
// wheel's slack. An unreachable (ICMP, a failed neighbour entry, sends that
// never left) can revert the backoff (RFC 6069) after the projection and
// bring the end earlier by up to the next interval. Only a held
// retransmission leaving after the timer's expiry (6.1, IPv6, the cable
// pulled) brings it later, by less than the RTO it restarted the timer
// with, and is told by a stalled line of its own (TimerRestarted) whose
// projection holds as every other.
func checkStories(t *testing.T, lines []Record) {
	t.Helper()
	type key struct {
		host string
		l, r netip.AddrPort
	}
	testkit.OneStory(t, "lab", lines, func(l Record) testkit.Told {
		if l.Narrative == nil {
			return testkit.Told{} // not a narrative: no story, never final
		}
		n := l.Narrative
		conn := fmt.Sprintf("%s %v>%v", l.Host, n.Local, n.Remote)
		if n.Local.Port() == 0 && n.Verdict == tracker.LocalPortsExhausted {
			// connect() found no port: no 4-tuple of its own, every
			// failure is another socket (told folded, see tracker/ports.go).
			conn += fmt.Sprintf(" cookie %d", n.Cookie)
		}
		return testkit.Told{Conn: conn, Verdict: string(n.Verdict), Final: n.Final}
	})
	projected := map[key][]*tracker.Narrative{}
	restarted := map[key]time.Duration{} // the restart's RTO, for the projections it overtook
	overtaken := map[key][]*tracker.Narrative{}
	for _, l := range lines {
		n := l.Narrative
		if n == nil {
			continue
		}
		k := key{l.Host, n.Local, n.Remote}
		if tcp.KernelInternalErrno(n.Errno) {
			t.Errorf("%s %s: errno %d reached a narrative", l.Host, n.Verdict, n.Errno)
		}
		switch {
		case n.Verdict == tracker.Stalled && !n.Final:
			if n.TimerRestarted && restarted[k] == 0 {
				overtaken[k], projected[k] = projected[k], nil
				restarted[k] = min(n.RTOs[len(n.RTOs)-1]*2, tcp.RTOMaxDefault) // icsk_rto after the last expiry
			}
			projected[k] = append(projected[k], n)
		case n.Final && (n.Verdict == tracker.RetransmitTimeout || n.Verdict == tracker.HostUnreachable) && !n.Connecting && !n.EndUnseen:
			// (An end told from the socket table, its records unseen, is
			// dated when tcpwatch learned it: there is no kill time to
			// hold the projections against.)
			for _, p := range projected[k] {
				at := p.Mono + p.GiveUpIn
				// The timer wheel fires up to an eighth of the time to
				// expiry late (more under an emulator: the kernel matrix
				// runs this under qemu TCG).
				late := p.GiveUpIn/8 + 250*time.Millisecond
				early := -5 * time.Millisecond
				if p.FailedSends > 0 || n.FailedSends > 0 || n.SkErrSoft != 0 || tcp.Unreachable(n.Errno) {
					if len(n.RTOs) > 0 {
						early = -2 * slices.Max(n.RTOs)
					} else {
						early = -p.GiveUpIn // window probes: any time after the projection was made
					}
				}
				if d := n.Mono - at; d < early || d > late {
					t.Errorf("%s %v>%v: stalled at %v projected the end at %v; it came at %v (%v off, RTOs %v)",
						l.Host, n.Local, n.Remote, p.Mono, at, n.Mono, d, n.RTOs)
				}
			}
			for _, p := range overtaken[k] {
				at := p.Mono + p.GiveUpIn
				if d := n.Mono - at; d < -5*time.Millisecond || d > restarted[k]+p.GiveUpIn/8+250*time.Millisecond {
					t.Errorf("%s %v>%v: stalled at %v projected the end at %v before the timer restarted (RTO %v); it came at %v (%v off)",
						l.Host, n.Local, n.Remote, p.Mono, at, restarted[k], n.Mono, d)
				}
			}
		}
	}
}

// scenarioChecks look at the figures of particular scenarios.
var scenarioChecks = map[string]func(t *testing.T, lines []Record){
	"connect-unreachable": func(t *testing.T, lines []Record) {
		for _, l := range lines {
			if n := l.Narrative; n != nil && n.Verdict == tracker.HostUnreachable {
				// A failed handshake, told as one: SYN budget, the time since connect().
				if !n.Connecting || n.Budget.Setting != "tcp_syn_retries" || n.Outage < time.Second || n.Errno != int32(unix.EHOSTUNREACH) {
					t.Errorf("connecting %v budget %+v outage %v errno %d", n.Connecting, n.Budget, n.Outage, n.Errno)
				}
				return
			}
		}
		t.Error("no host_unreachable")
	},
	"host-down-app-closes": func(t *testing.T, lines []Record) {
		for _, l := range lines {
			if n := l.Narrative; n != nil && l.Host == "A" && n.Verdict == tracker.RetransmitTimeout {
				if n.Orphan || n.Budget.Setting != "tcp_retries2" {
					t.Errorf("retransmit_timeout orphan=%v budget %s: the client held the socket when the kernel gave up", n.Orphan, n.Budget.Setting)
				}
				return
			}
		}
		t.Error("no retransmit_timeout for A")
	},
	"keepalive-kill-joined": func(t *testing.T, lines []Record) {
		for _, l := range lines {
			if n := l.Narrative; n != nil && l.Host == "A" && n.Verdict == tracker.PeerReset {
				if n.PeerEnd == nil || n.PeerEnd.Verdict != tracker.KeepaliveTimeout {
					t.Errorf("A's peer_reset not joined with B's keepalive_timeout: %+v", n.PeerEnd)
				}
				return
			}
		}
		t.Error("no peer_reset for A")
	},
	"process-killed-in-outage": func(t *testing.T, lines []Record) {
		for _, l := range lines {
			if n := l.Narrative; n != nil && l.Host == "A" && n.Verdict == tracker.LocalProcessExited {
				if n.ExitSignal != 9 || n.Retransmits < 1 || n.Outage <= 0 || n.Errno != 0 || n.Owner.Comm != "lab-client" {
					t.Errorf("local_process_exited: signal %d retransmits %d outage %v errno %d owner %+v",
						n.ExitSignal, n.Retransmits, n.Outage, n.Errno, n.Owner)
				}
				// Its socket lives on as an orphan: the kernel counts
				// tcp_orphan_retries from then on, not tcp_retries2.
				if n.Budget.Setting != "tcp_orphan_retries" {
					t.Errorf("local_process_exited in an outage cites %s's budget, want tcp_orphan_retries", n.Budget.Setting)
				}
				return
			}
		}
		t.Error("no local_process_exited for A")
	},
}
