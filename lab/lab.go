// Package lab reproduces, on one machine, every way a TCP connection can
// fail that tcpwatch narrates: two hosts (network namespaces) joined by a
// cable, real client and server processes, a real failure, and tcpwatch
// tracing both hosts while it happens.
package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/lab/netlab"
	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Options tune a run.
// CloseWaitAfter is the lab's close_wait_stuck threshold, shortened like
// the kernel's timers (tcpwatch's default is a minute). Replays of the
// lab's recordings use it too.
const CloseWaitAfter = 2 * time.Second

type Options struct {
	// KernelDefaults keeps the kernel's own timers instead of the lab's
	// shortened ones (scenarios then take minutes to hours).
	KernelDefaults bool
	Retries2       int           // tcp_retries2; 0: the lab's default (3)
	SynRetries     int           // tcp_syn_retries; 0: the lab's default (1)
	KeepaliveTime  time.Duration // 0: the lab's default (2s)
	KeepaliveIntvl time.Duration // 0: the lab's default (1s)
	KeepaliveProbe int           // 0: the lab's default (3)
	ReplugAfter    time.Duration // outage length for the replug scenarios; 0: 2s
	// CloseWaitAfter is tcpwatch's close_wait_stuck threshold in the
	// lab; 0: CloseWaitAfter (tcpwatch's own default with KernelDefaults).
	CloseWaitAfter time.Duration
	Timeout        time.Duration // give up waiting for the verdicts; 0: 20s (or an hour with KernelDefaults)
	// Agent is the executable that runs the lab's applications; empty means
	// this process's own executable (which must run AgentMain for AgentArgs).
	Agent string
	// Record, when set, receives the run's kernel events as a recording
	// (wire.WriteRecord) with comments naming the hosts' namespaces and
	// the verdicts given: test data for the tracker.
	Record io.Writer
	// BeforeTeardown, when set, runs with the result while the hosts and
	// applications still exist: a test watching with a tracer of its own
	// (the tcpwatch command, which reads listeners and sockets on its own
	// rhythm) waits there for what that tracer tells.
	BeforeTeardown func(*Result)
}

func (o *Options) withDefaults() Options {
	c := *o
	if c.Retries2 == 0 {
		c.Retries2 = 3
	}
	if c.SynRetries == 0 {
		c.SynRetries = 1
	}
	if c.KeepaliveTime == 0 {
		c.KeepaliveTime = 2 * time.Second
	}
	if c.KeepaliveIntvl == 0 {
		c.KeepaliveIntvl = time.Second
	}
	if c.KeepaliveProbe == 0 {
		c.KeepaliveProbe = 3
	}
	if c.CloseWaitAfter == 0 && !c.KernelDefaults {
		c.CloseWaitAfter = CloseWaitAfter
	}
	if c.ReplugAfter == 0 {
		c.ReplugAfter = 2 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 20 * time.Second
		if c.KernelDefaults {
			c.Timeout = 3 * time.Hour
		}
	}
	return c
}

// Record is one line of a lab run's account: a step the lab took, a
// narrative from tcpwatch, or what an application saw.
type Record struct {
	Type      string             `json:"type"` // lab_step, narrative, event, app, lab_result
	T         time.Duration      `json:"-"`
	TMs       int64              `json:"t_ms"`
	Host      string             `json:"host,omitempty"`
	What      string             `json:"what,omitempty"`
	Narrative *tracker.Narrative `json:"-"`
	Notice    *tracker.Notice    `json:"-"`
	Event     *wire.Event        `json:"-"`
	App       *AppEvent          `json:"-"`
	Result    *Result            `json:"-"`
	// Cgroup and ResetReasons come with a narrative, notice or event:
	// what the engine learned around it (engine.Item).
	Cgroup       containers.Info  `json:"-"`
	ResetReasons tcp.ResetReasons `json:"-"`
}

// Result is the outcome of a run.
type Result struct {
	Scenario string              `json:"scenario"`
	Verdicts map[string][]string `json:"verdicts"`  // host -> verdicts in order
	Notices  map[string][]string `json:"notices"`   // host -> notices (time_wait_reuse)
	AppErrno map[string][]string `json:"app_errno"` // host -> errnos its application saw
	Expected map[string][]string `json:"expected"`
	// NetNS lists each host's namespace inodes (a reboot adds one).
	NetNS map[string][]uint32 `json:"netns"`
	// PIDs lists each host's application processes.
	PIDs     map[string][]int `json:"pids"`
	OK       bool             `json:"ok"`
	Missing  []string         `json:"missing,omitempty"`
	Duration time.Duration    `json:"-"`
}

// Reporter receives a run's account (steps, narratives, applications' errors,
// the result) as it happens, one call at a time. (What tcpwatch tells
// reaches the lab through labSink, an engine.Sink.)
type Reporter func(Record)

// run is one scenario in progress.
type run struct {
	sc    *Scenario
	opt   Options
	ctx   context.Context
	start time.Time
	sink  Reporter
	net   *netlab.Lab
	hosts map[string]*netlab.Host
	cable *netlab.Cable
	apps  map[string]*exec.Cmd // the last application started on each host (kill, stdin)
	// allApps is every application started: the teardown kills them all.
	allApps []*exec.Cmd
	wg      sync.WaitGroup

	emitMu     sync.Mutex
	mu         sync.Mutex
	netnsHost  map[uint32]string
	verdicts   map[string][]string
	summaries  map[string][]string // host -> the one-line summaries told, for Scenario.ExpectWords
	notices    map[string][]string
	appErrno   map[string][]string
	appWhat    map[string][]string
	stdin      map[string]io.WriteCloser
	agentDir   string
	appPIDs    map[string][]int
	changed    chan struct{}
	kernelDone chan struct{}
	traceErr   error // why tracing stopped before the run ended (read after kernelDone)
	// seesTimeWait: the drop path names the TIME_WAIT a dropped SYN or
	// RST met (Scenario.ToldFromTimeWaitDrops).
	seesTimeWait bool
}

func (r *run) since() time.Duration { return time.Since(r.start) }

// emit hands a record to the sink; records come from the tracing
// goroutine, the applications' readers and the scenario, one at a time.
func (r *run) emit(rec Record) {
	r.emitMu.Lock()
	defer r.emitMu.Unlock()
	rec.T = r.since()
	rec.TMs = rec.T.Milliseconds()
	r.sink(rec)
}

func (r *run) step(format string, args ...any) {
	r.emit(Record{Type: "lab_step", Host: "lab", What: fmt.Sprintf(format, args...)})
}

func (r *run) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Cleanup removes the namespaces (and their processes) of lab runs whose
// process is gone, and their directories under the temporary directory.
func Cleanup() ([]string, error) {
	removed, err := netlab.CleanupStale()
	dirs, derr := cleanupAgentDirs(os.TempDir())
	return append(removed, dirs...), errors.Join(err, derr)
}

// ErrNotRoot is returned when the lab cannot create namespaces.
var ErrNotRoot = errors.New("the lab needs root: it creates network namespaces, links and nftables rules")

// Run builds the scenario's network, runs it while tracing, sends its
// account to sink, and removes everything it made, whatever happens.
func Run(ctx context.Context, name string, opt Options, sink Reporter) (*Result, error) {
	sc := Find(name)
	if sc == nil {
		return nil, fmt.Errorf("no scenario %q (tcpwatch lab list shows them)", name)
	}
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	opt = opt.withDefaults()
	if sc.Timeout > opt.Timeout {
		opt.Timeout = sc.Timeout
	}
	if opt.Agent == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the lab's application binary: %w", err)
		}
		opt.Agent = exe
	}
	// A namespace an earlier run left that cannot be removed now (still
	// mounted elsewhere) does not stand in this run's way: names are per run.
	_, staleErr := netlab.CleanupStale()

	r := &run{sc: sc, opt: opt, ctx: ctx, start: time.Now(), sink: sink,
		hosts: map[string]*netlab.Host{}, apps: map[string]*exec.Cmd{},
		netnsHost: map[uint32]string{}, verdicts: map[string][]string{}, summaries: map[string][]string{}, notices: map[string][]string{}, appErrno: map[string][]string{},
		appWhat: map[string][]string{}, stdin: map[string]io.WriteCloser{}, appPIDs: map[string][]int{},
		changed: make(chan struct{}, 1), kernelDone: make(chan struct{})}

	cfg := engine.Config{Mode: engine.ModeRoutine, Record: opt.Record, NoExisting: true, Accept: r.ours,
		CloseWaitAfter: opt.CloseWaitAfter}
	t, err := tracer.New(cfg.Kernel(tracer.Config{}))
	if err != nil {
		return nil, err
	}
	defer t.Close()
	r.seesTimeWait = t.SeesTimeWait()
	if cfg.CloseWaitAfter >= 0 {
		after := cfg.CloseWaitAfter
		if after == 0 {
			after = tracker.DefaultCloseWaitAfter
		}
		scan, err := tracer.OpenSocketReaderWith(tracer.SocketReaderOptions{ConnectionsOnly: true, MarkCloseWait: t, CloseWaitAfter: after})
		if err != nil {
			return nil, err
		}
		defer scan.Close()
		cfg.ScanCloseWaits = engine.CloseWaitScanner(scan, 0, func(netns uint32) bool {
			r.mu.Lock()
			host, ok := r.netnsHost[netns]
			r.mu.Unlock()
			return ok && host != "R"
		})
	}
	traceCtx, stopTrace := context.WithCancel(context.Background())
	go r.trace(traceCtx, engine.New(t, cfg))
	defer func() {
		stopTrace()
		<-r.kernelDone
	}()
	if err := r.linkAgents(); err != nil {
		return nil, err
	}
	defer os.RemoveAll(r.agentDir)

	net, err := netlab.New()
	if err != nil {
		return nil, err
	}
	r.net = net
	defer func() {
		r.stopApps()
		if err := net.Close(); err != nil {
			r.step("cleanup failed: %v", err)
		} else {
			r.step("removed every namespace, link and process the lab created")
		}
	}()

	if staleErr != nil {
		r.step("could not remove every namespace an earlier run left: %v", staleErr)
	}
	if opt.Record != nil {
		fmt.Fprintf(opt.Record, "# lab scenario %s: %s\n", sc.Name, sc.Summary)
		if opt.CloseWaitAfter > 0 {
			// A replay must judge CLOSE_WAIT with the same threshold.
			fmt.Fprintf(opt.Record, "# close-wait-after %s\n", opt.CloseWaitAfter)
		}
	}
	if err := r.build(); err != nil {
		return nil, err
	}
	err = sc.Act(r)
	// Let the kernel's last events (a reset, an error report) arrive, then
	// stop tracing before the teardown kills the applications.
	time.Sleep(300 * time.Millisecond)
	stopTrace()
	<-r.kernelDone
	if r.traceErr != nil {
		return nil, fmt.Errorf("tracing stopped before the scenario ended: %w", r.traceErr)
	}
	res := r.result()
	if r.opt.Record != nil {
		for _, h := range []string{"A", "B"} {
			fmt.Fprintf(r.opt.Record, "# verdicts %s %s\n", h, strings.Join(res.Verdicts[h], " "))
			fmt.Fprintf(r.opt.Record, "# notices %s %s\n", h, strings.Join(res.Notices[h], " "))
		}
	}
	r.emit(Record{Type: "lab_result", Result: res})
	if opt.BeforeTeardown != nil {
		opt.BeforeTeardown(res)
	}
	return res, err
}

// build makes the hosts, cable (and router), sets the timers and starts the
// server.
func (r *run) build() error {
	sc, opt := r.sc, r.opt
	for _, name := range []string{"A", "B"} {
		h, err := r.net.AddHost(name)
		if err != nil {
			return err
		}
		r.hosts[name] = h
	}
	a, b := r.hosts["A"], r.hosts["B"]
	if sc.Router {
		rt, err := r.net.Router("R", a, b)
		if err != nil {
			return err
		}
		r.hosts["R"] = rt
		r.step("built hosts A (%s) and B (%s) joined through router R", r.addr("A"), r.addr("B"))
	} else {
		c, err := r.net.Cable(a, b, netlab.CableOptions{})
		if err != nil {
			return err
		}
		r.cable = c
		r.step("built hosts A (%s) and B (%s) joined by a cable", r.addr("A"), r.addr("B"))
	}
	if !opt.KernelDefaults {
		settings := [][2]string{
			{"net/ipv4/tcp_retries2", strconv.Itoa(opt.Retries2)},
			{"net/ipv4/tcp_syn_retries", strconv.Itoa(opt.SynRetries)},
			{"net/ipv4/tcp_keepalive_time", strconv.Itoa(int(opt.KeepaliveTime / time.Second))},
			{"net/ipv4/tcp_keepalive_intvl", strconv.Itoa(int(opt.KeepaliveIntvl / time.Second))},
			{"net/ipv4/tcp_keepalive_probes", strconv.Itoa(opt.KeepaliveProbe)},
		}
		for _, hn := range []string{"A", "B"} {
			for _, kv := range settings {
				if err := r.hosts[hn].Sysctl(kv[0], kv[1]); err != nil {
					return err
				}
			}
		}
		r.step("shortened the kernel's timers inside A and B only: tcp_retries2=%d (budget %s), tcp_syn_retries=%d, keepalive %s/%s/%d",
			opt.Retries2, tcp.RetransmitBudget(uint8(opt.Retries2), 0), opt.SynRetries,
			opt.KeepaliveTime, opt.KeepaliveIntvl, opt.KeepaliveProbe)
	} else {
		r.step("kept the kernel's default timers (tcp_retries2=15: a 924.6s budget)")
	}
	for key, value := range sc.Sysctls {
		if err := r.hosts["A"].Sysctl(key, value); err != nil {
			return err
		}
		r.step("set %s=%s in A", key, value)
	}
	for key, value := range sc.SysctlsB {
		if err := r.hosts["B"].Sysctl(key, value); err != nil {
			return err
		}
		r.step("set %s=%s in B", key, value)
	}
	r.refreshNetns()
	return nil
}

func (r *run) addr(host string) string {
	h := r.hosts[host]
	if r.sc.IPv6 {
		return h.Addr6().String()
	}
	return h.Addr4().String()
}

// serverAddr is where B's server listens.
func (r *run) serverAddr(port int) string {
	if r.sc.IPv6 {
		return "[" + r.hosts["B"].Addr6().String() + "]:" + strconv.Itoa(port)
	}
	return r.hosts["B"].Addr4().String() + ":" + strconv.Itoa(port)
}

// refreshNetns maps namespace inodes to host names (a reboot makes a new one).
func (r *run) refreshNetns() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, h := range r.hosts {
		var st unix.Stat_t
		if unix.Stat(h.NetnsPath(), &st) == nil {
			ino := uint32(st.Ino)
			if _, known := r.netnsHost[ino]; !known && r.opt.Record != nil && name != "R" {
				fmt.Fprintf(r.opt.Record, "# host %s netns %d\n", name, ino)
			}
			r.netnsHost[ino] = name
		}
	}
}

// ours keeps the events of the lab's hosts (not its router's).
func (r *run) ours(ev *wire.Event) bool {
	r.mu.Lock()
	host, ok := r.netnsHost[ev.NetNS]
	r.mu.Unlock()
	return ok && host != "R"
}

// trace runs the engine over the lab's hosts until ctx ends.
func (r *run) trace(ctx context.Context, e *engine.Engine) {
	defer close(r.kernelDone)
	st, err := e.Run(ctx, labSink{r})
	// What tcpwatch read and lost is part of the account: a verdict that
	// did not come is a lost record or a wrong story, and the difference
	// matters to whoever reads a failed run.
	r.step("tcpwatch read %d records of the lab's hosts; lost %d (ring full %d, programs skipped %d), kernel skips %+v; ends told at the kernel's deadline, their records unseen: %d",
		st.Events, st.Lost, st.RingFull, st.Recursion, st.Skipped, st.EndsAtDeadline)
	r.traceErr = err
}

// labSink records what tcpwatch tells about each host (an engine.Sink).
type labSink struct{ r *run }

func (s labSink) host(netns uint32) string {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	return s.r.netnsHost[netns]
}

func (s labSink) Flush() error { return nil }

func (s labSink) Tell(it *engine.Item) error {
	rec := Record{Cgroup: it.Cgroup, ResetReasons: it.ResetReasons}
	switch {
	case it.Narrative != nil:
		n := *it.Narrative
		n.Timeline = slices.Clone(n.Timeline) // the engine reuses its array
		rec.Type, rec.Host, rec.Narrative = "narrative", s.host(n.NetNS), &n
		s.r.mu.Lock()
		s.r.verdicts[rec.Host] = append(s.r.verdicts[rec.Host], string(n.Verdict))
		s.r.summaries[rec.Host] = append(s.r.summaries[rec.Host], words.Summary(&n))
		s.r.mu.Unlock()
	case it.Notice != nil:
		n := *it.Notice
		rec.Type, rec.Host, rec.Notice = "notice", s.host(n.NetNS), &n
		s.r.mu.Lock()
		s.r.notices[rec.Host] = append(s.r.notices[rec.Host], n.Kind)
		s.r.summaries[rec.Host] = append(s.r.summaries[rec.Host], words.NoticeSummary(&n))
		s.r.mu.Unlock()
	case it.Event != nil:
		// What tcpwatch shows only with --all: a keepalive probe answered.
		ev := *it.Event
		rec.Type, rec.Host, rec.Event = "event", s.host(ev.NetNS), &ev
	case it.Loss != nil:
		l := it.Loss
		s.r.step("%d kernel records lost (ring buffer full: %d, programs skipped: %d), %d kernel skips for want of room (%+v)",
			l.New, l.RingFull, l.Recursion, l.NewSkipped, l.Skipped)
		return nil
	default:
		return nil
	}
	s.r.emit(rec)
	s.r.notify()
	return nil
}

// linkAgents names the application binaries after their roles, so that the
// owner tcpwatch reports is "lab-client" or "lab-server", not "tcpwatch".
func (r *run) linkAgents() error {
	dir, err := makeAgentDir()
	if err != nil {
		return err
	}
	r.agentDir = dir
	for _, role := range []string{"client", "server"} {
		if err := os.Symlink(r.opt.Agent, filepath.Join(dir, "lab-"+role)); err != nil {
			return err
		}
	}
	return nil
}

// startApp starts a lab application in host and records what it reports.
func (r *run) startApp(host string, args ...string) error {
	h := r.hosts[host]
	role := "client"
	for _, a := range args {
		if a == "--role=server" {
			role = "server"
		}
	}
	cmd := h.Command(filepath.Join(r.agentDir, "lab-"+role), append(slices.Clone(AgentCommand), args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	r.stdin[host] = in
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the %s application: %w", host, err)
	}
	r.apps[host] = cmd
	r.allApps = append(r.allApps, cmd)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev AppEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			r.mu.Lock()
			r.appWhat[host] = append(r.appWhat[host], ev.What)
			if !slices.Contains(r.appPIDs[host], ev.PID) {
				r.appPIDs[host] = append(r.appPIDs[host], ev.PID)
			}
			if ev.Errno != "" {
				r.appErrno[host] = append(r.appErrno[host], ev.Errno)
			}
			r.mu.Unlock()
			r.emit(Record{Type: "app", Host: host, App: &ev})
			r.notify()
		}
		_ = cmd.Wait()
	}()
	return nil
}

func (r *run) stopApps() {
	for _, cmd := range r.allApps {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	}
	r.wg.Wait()
}

// waitFor blocks until cond holds (checked whenever something happens) or
// the run's timeout passes.
func (r *run) waitFor(what string, cond func() bool) error {
	deadline := time.After(r.opt.Timeout - r.since())
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-r.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			return fmt.Errorf("gave up after %s waiting for %s", r.opt.Timeout, what)
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	}
}

// waitVerdict waits for host to be given verdict v.
func (r *run) waitVerdict(host string, v tracker.Verdict) error {
	return r.waitFor(fmt.Sprintf("%s on %s", v, host), func() bool {
		for _, got := range r.verdicts[host] {
			if got == string(v) {
				return true
			}
		}
		return false
	})
}

// waitAppSaid waits for host's application to report what.
func (r *run) waitAppSaid(host, what string) error {
	return r.waitFor(fmt.Sprintf("the %s application to report %q", host, what), func() bool {
		for _, w := range r.appWhat[host] {
			if w == what {
				return true
			}
		}
		return false
	})
}

// tell sends a command ("write", "close") to host's application.
func (r *run) tell(host, cmd string) error {
	in, ok := r.stdin[host]
	if !ok {
		return fmt.Errorf("no application runs in %s", host)
	}
	_, err := io.WriteString(in, cmd+"\n")
	return err
}

// kill sends sig to host's application.
func (r *run) kill(host string, sig os.Signal) error {
	cmd, ok := r.apps[host]
	if !ok || cmd.Process == nil {
		return fmt.Errorf("no application runs in %s", host)
	}
	return cmd.Process.Signal(sig)
}

func (r *run) sleep(d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
}

// waitExpected waits until every expected verdict has been given.
func (r *run) waitExpected() error {
	return r.waitFor("the expected verdicts", func() bool { return len(r.missingTellable()) == 0 })
}

// missingTellable is missing() without what this kernel cannot tell
// (Scenario.ToldFromTimeWaitDrops): a scenario waits for the rest only,
// and its result still lists all that is missing. Caller holds mu.
func (r *run) missingTellable() []string {
	out := r.missing()
	if r.seesTimeWait {
		return out
	}
	return slices.DeleteFunc(out, func(m string) bool {
		return slices.ContainsFunc(r.sc.ToldFromTimeWaitDrops, func(host string) bool { return strings.HasPrefix(m, host+":") })
	})
}

// expectedSeen says whether every expected verdict and phrase was given.
func (r *run) expectedSeen() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.missing()) == 0
}

// missing lists expected verdicts not (yet) given; caller holds mu.
func (r *run) missing() []string {
	var out []string
	for host, want := range r.sc.Expect {
		got := r.verdicts[host]
		i := 0
		for _, v := range got {
			if i < len(want) && matches(want[i], v) {
				i++
			}
		}
		for ; i < len(want); i++ {
			out = append(out, host+":"+string(want[i]))
		}
	}
	for host, phrases := range r.sc.ExpectWords {
		for _, p := range phrases {
			// "a|b": either words will do (kernels differ).
			alts := strings.Split(p, "|")
			if !slices.ContainsFunc(r.summaries[host], func(s string) bool {
				return slices.ContainsFunc(alts, func(a string) bool { return strings.Contains(s, a) })
			}) {
				out = append(out, host+": words "+strconv.Quote(p))
			}
		}
	}
	for host, kinds := range r.sc.ExpectNotice {
		for _, k := range kinds {
			if !slices.Contains(r.notices[host], k) {
				out = append(out, host+":"+k)
			}
		}
	}
	sort.Strings(out)
	return out
}

func (r *run) result() *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{Scenario: r.sc.Name, Verdicts: map[string][]string{}, AppErrno: map[string][]string{},
		Expected: map[string][]string{}, NetNS: map[string][]uint32{}, PIDs: map[string][]int{}, Duration: r.since(),
		Notices: map[string][]string{}}
	for h, n := range r.notices {
		res.Notices[h] = append([]string(nil), n...)
	}
	for ino, h := range r.netnsHost {
		res.NetNS[h] = append(res.NetNS[h], ino)
	}
	for h, pids := range r.appPIDs {
		res.PIDs[h] = append([]int(nil), pids...)
	}
	for h, v := range r.verdicts {
		if h != "" {
			res.Verdicts[h] = append([]string(nil), v...)
		}
	}
	for h, v := range r.appErrno {
		res.AppErrno[h] = append([]string(nil), v...)
	}
	for h, v := range r.sc.Expect {
		for _, x := range v {
			res.Expected[h] = append(res.Expected[h], string(x))
		}
	}
	res.Missing = r.missing()
	res.OK = len(res.Missing) == 0
	for h, unwanted := range r.sc.Forbid {
		for _, v := range r.verdicts[h] {
			for _, u := range unwanted {
				if v == string(u) {
					res.OK = false
					res.Missing = append(res.Missing, "unexpected "+h+":"+v)
				}
			}
		}
	}
	for h, unwanted := range r.sc.ForbidNotice {
		for _, k := range r.notices[h] {
			if slices.Contains(unwanted, k) {
				res.OK = false
				res.Missing = append(res.Missing, "unexpected "+h+":"+k)
			}
		}
	}
	return res
}
