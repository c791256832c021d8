package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type report struct {
	c           config
	started     time.Time
	startLoad   string
	churn       []*churnResult
	churnBase   *churnResult // --baseline, if given
	busy        []*busyResult
	bulk        []*bulkResult
	timers      []*timerResult
	drops       []*dropsResult
	memory      *memoryResult
	startLoaded []float64
	startFirst  []float64
	decode      []string
}

func newReport(c config) *report { return &report{c: c, started: time.Now(), startLoad: loadAvg()} }

func (r *report) bulkFor(name string) *bulkResult {
	for _, b := range r.bulk {
		if b.name == name {
			return b
		}
	}
	b := &bulkResult{name: name}
	r.bulk = append(r.bulk, b)
	return b
}

func (r *report) busyFor(name string) *busyResult {
	for _, b := range r.busy {
		if b.name == name {
			return b
		}
	}
	b := &busyResult{name: name}
	r.busy = append(r.busy, b)
	return b
}

func (r *report) dropsFor(name string) *dropsResult {
	for _, d := range r.drops {
		if d.name == name {
			return d
		}
	}
	d := &dropsResult{name: name}
	r.drops = append(r.drops, d)
	return d
}

func (r *report) timerFor(name string) *timerResult {
	for _, t := range r.timers {
		if t.name == name {
			return t
		}
	}
	t := &timerResult{name: name}
	r.timers = append(r.timers, t)
	return t
}

// ms formats a median with its spread: "412 (398–430)".
func ms(xs []float64, prec int) string {
	if len(xs) == 0 {
		return "–"
	}
	lo, hi := spread(xs)
	f := fmt.Sprintf("%%.%df", prec)
	return fmt.Sprintf(f+" ("+f+"–"+f+")", median(xs), lo, hi)
}

func (r *report) find(name string) *churnResult {
	for _, c := range r.churn {
		if c != nil && c.name == name {
			return c
		}
	}
	return nil
}

// stages pairs each tcpwatch program with the floor's empty program on the
// same tracepoint. Program names are as the kernel keeps them (15 bytes).
var stages = []struct{ tracepoint, floor, tw string }{
	{"sock:inet_sock_set_state", "floor_set_state", "tw_set_state"},
	{"tcp:tcp_destroy_sock", "floor_destroy", "tw_destroy_sock"},
	{"tcp:tcp_cong_state_set", "floor_cong_state", "tw_cong_state"},
	{"tcp:tcp_retransmit_skb", "floor_retransmi", "tw_retransmit"},
	{"tcp:tcp_send_reset", "floor_send_rese", "tw_send_reset"},
	{"tcp:tcp_receive_reset", "floor_recv_rese", "tw_receive_rese"},
	{"sock:inet_sk_error_report", "floor_error", "tw_error_report"},
	{"timer:timer_expire_entry", "floor_timer_ent", "tw_timer_entry"},
	{"timer:timer_expire_exit", "floor_timer_exi", "tw_timer_exit"},
}

// perRun is a cost's ns per run and runs per unit of work, for the
// programs whose names start with prefix.
func perRun(c cost, prefix string, units float64) (ns, runs float64, ok bool) {
	var tns, truns uint64
	for name, v := range c.bpfNs {
		if strings.HasPrefix(name, prefix) {
			tns += v
			truns += c.runs[name]
		}
	}
	if truns == 0 {
		return 0, 0, false
	}
	return float64(tns) / float64(truns), float64(truns) / units, true
}

func ratio(x, floor float64) string {
	if floor <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f×", x/floor)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func (r *report) write(path string) error {
	var b strings.Builder
	var uts unix.Utsname
	unix.Uname(&uts)
	fmt.Fprintf(&b, "# Performance\n\n")
	fmt.Fprintf(&b, "What tcpwatch costs, measured in one run beside the floor (empty BPF programs on exactly the tracepoints tcpwatch attaches, none on the send/receive path) and bpftrace printing each event on them. Written by `make bench`; the prose between the tables is the harness's (cmd/tcpwatch-bench/report.go), the figures are this run's.\n\n")
	fmt.Fprintf(&b, "- Machine: %s, %d cores, kernel %s; load average when the run began: %s, at the end: %s. The machine is shared (other builds, tests and a qemu guest run beside), so only ratios measured side by side in the same round mean much: every round runs each configuration once, one after the other.\n", cpuModel(), numCPU(), unix.ByteSliceToString(uts.Release[:]), r.startLoad, loadAvg())
	fmt.Fprintf(&b, "- Run: %s, %d rounds per configuration; figures are the median with the spread (min–max) of the rounds\n", r.started.UTC().Format("2006-01-02 15:04 MST"), r.c.rounds)
	fmt.Fprintf(&b, "- Reproduce: `make bench` (as root; it builds tcpwatch and runs `go run -C cmd/tools ./tcpwatch-bench`; `--workloads churn,busy` runs part of it, `--churn-tracers floor,all` part of the churn, and `--baseline` with `baseline-all` puts another build's `--all` beside)\n")
	fmt.Fprintf(&b, "- Tracer CPU per unit of work = run time of the tracer's BPF programs (BPF_ENABLE_STATS: the kernel's `run_time_ns`, also shown per program) + CPU time of its process (schedstat of all its threads), divided by the connections, requests or events. Throughput swings by ±30%% between runs here, so it is shown beside, not as the headline.\n\n")

	none, floor, tw, all, bt := r.find("none"), r.find("floor (empty programs)"), r.find("tcpwatch"), r.find("tcpwatch --all"), r.find("bpftrace")
	var bFloor, bTw, bAll *busyResult
	for _, x := range r.busy {
		switch x.name {
		case floorTracer.name:
			bFloor = x
		case tcpwatchDefault.name:
			bTw = x
		case tcpwatchAll.name:
			bAll = x
		}
	}
	if (floor != nil && tw != nil) || (bFloor != nil && bTw != nil) {
		b.WriteString("## Goals\n\n| goal | measured (median of the rounds) | |\n|---|---|---|\n")
		if floor != nil && tw != nil {
			x := median(tw.total) / median(floor.total)
			fmt.Fprintf(&b, "| churn, default mode ≤ 3× the floor | %.1f× (%.0f vs %.0f ns/connection) | %s |\n", x, median(tw.total), median(floor.total), met(x <= 3))
		}
		if floor != nil && all != nil {
			x := median(all.total) / median(floor.total)
			fmt.Fprintf(&b, "| churn, `--all` ≤ 10× the floor | %.1f× (%.0f ns/connection) | %s |\n", x, median(all.total), met(x <= 10))
		}
		if all != nil && bt != nil {
			x := median(bt.total) / median(all.total)
			fmt.Fprintf(&b, "| churn, `--all` ≤ 1/10 of bpftrace | 1/%.1f (bpftrace %.0f ns/connection) | %s |\n", x, median(bt.total), met(x >= 10))
		}
		if bFloor != nil && bTw != nil {
			// The workload's own share: the tracer's cost less what the
			// same tracer spent on the rest of the machine while idle. With
			// nothing on the per-message path both are about 0, so the
			// goal is judged against the floor's with a 1 ns/request slack.
			x, f := median(bTw.net), median(bFloor.net)
			fmt.Fprintf(&b, "| busy server, default mode: tracer CPU per request ≤ 1.5× the floor | %.2f vs %.2f ns/request net of the idle background (raw, background included: %.1f vs %.1f); whole CPU per request %.2f× the floor's | %s |\n",
				x, f, median(bTw.tracer), median(bFloor.tracer), median(bTw.whole)/median(bFloor.whole), met(x <= 1.5*f+1))
		}
		if bFloor != nil && bAll != nil {
			fmt.Fprintf(&b, "| busy server, `--all` (no goal set; shown for reference) | %.2f ns/request net (raw %.1f) | |\n", median(bAll.net), median(bAll.tracer))
		}
		if rates := replayRates(r.decode, "BenchmarkReplayAll/summary/short"); len(rates) > 0 {
			x := median(rates)
			fmt.Fprintf(&b, "| `--all` keeps up with a 16-core host's loopback churn (%d connections/s, issue #21): one reader's user space replaying a churn recording (the records the kernel sends now: a normal lifecycle summarised, 2 a connection) at that host's pace ≥ that per CPU-second | %.0f connections per CPU-second (`BenchmarkReplayAll/summary/short`, median) | %s for user space alone; the 16-core host itself not re-measured here (2 shared cores), and the kernel half runs on the churning cores, not the reader's |\n", churn16Cores, x, met(x >= churn16Cores))
		}
		b.WriteString("\n")
	}

	if len(r.churn) > 0 {
		fmt.Fprintf(&b, "## Connection churn on loopback\n\n%d connections per round (connect, one byte each way, close), 4 client workers, server closes first. The tracers' output goes to a pipe that the harness drains (`--all` asks for a 1 MiB one, as it would of any pipe it writes to).\n\n", r.c.conns)
		fmt.Fprintf(&b, "| tracer | connections/s | vs no tracer | BPF programs run per connection | BPF ns/connection | user-space ns/connection | **total ns/connection** | × floor |\n|---|---|---|---|---|---|---|---|\n")
		for _, c := range r.churn {
			if c == nil {
				continue
			}
			rt, xfloor := "–", "–"
			if none != nil {
				rt = fmt.Sprintf("%.2f", median(c.rate)/median(none.rate))
			}
			if floor != nil && c.name != "none" {
				xfloor = fmt.Sprintf("%.1f", median(c.total)/median(floor.total))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | **%s** | %s |\n", c.name, ms(c.rate, 0), rt, ms(c.runs, 1),
				ms(c.bpf, 0), ms(c.user, 0), ms(c.total, 0), xfloor)
		}
		b.WriteString("\n")
		if floor != nil && tw != nil {
			b.WriteString("Per program, all rounds together (`run_time_ns / run_cnt` from the kernel, less sensitive to the machine's other load than the totals): ns per run, and runs per connection.\n\n")
			base := r.churnBase
			if base != nil {
				b.WriteString("| tracepoint | floor ns/run | tcpwatch ns/run | × floor | baseline ns/run | `--all` ns/run | runs/connection (tcpwatch) | tcpwatch ns/connection | `--all` ns/connection |\n|---|---|---|---|---|---|---|---|---|\n")
			} else {
				b.WriteString("| tracepoint | floor ns/run | tcpwatch ns/run | × floor | `--all` ns/run | runs/connection (tcpwatch) | tcpwatch ns/connection | `--all` ns/connection |\n|---|---|---|---|---|---|---|---|\n")
			}
			n := float64(r.c.conns * r.c.rounds)
			for _, st := range stages {
				fns, _, fok := perRun(floor.perProg, st.floor, n)
				tns, truns, tok := perRun(tw.perProg, st.tw, n)
				ans, aruns := 0.0, 0.0
				aok := false
				if all != nil {
					ans, aruns, aok = perRun(all.perProg, st.tw, n)
				}
				if !fok && !tok && !aok {
					continue
				}
				cell := func(ok bool, v float64) string {
					if !ok {
						return "–"
					}
					return fmt.Sprintf("%.0f", v)
				}
				x := "–"
				if fok && tok {
					x = ratio(tns, fns)
				}
				baseCell := ""
				if base != nil {
					bns, _, bok := perRun(base.perProg, st.tw, n)
					baseCell = " " + cell(bok, bns) + " |"
				}
				fmt.Fprintf(&b, "| `%s` | %s | %s | %s |%s %s | %.2f | %s | %s |\n", st.tracepoint, cell(fok, fns), cell(tok, tns), x, baseCell, cell(aok, ans),
					truns, cell(tok, tns*truns), cell(aok, ans*aruns))
			}
			b.WriteString("\n")
		}
		if bt != nil {
			fmt.Fprintf(&b, "bpftrace's programs ran %.1f times per connection for %.0f ns/connection in the kernel (the `bpftrace` row).\n\n", median(bt.runs), median(bt.bpf))
		}
		b.WriteString(churnLimits)
	}
	if len(r.busy) > 0 {
		fmt.Fprintf(&b, "## Busy server\n\n%d persistent loopback connections, each a client sending a one-byte request and waiting for the one-byte echo, %d requests per round in all (Go client and server in the harness's process). No connection opens or closes while it is timed: this is the per-message path, where tcpwatch used to run two programs per send and receive. *Tracer* is the tracer's BPF run time and its process over the round; the programs run for every connection and timer on the machine, so right after each round the same tracer is sampled idle for as long (*idle background*: other users' connections and timers) and *net* is the round less that; *whole* is the workload's process CPU (its syscalls and the loopback softirqs they run, which include any BPF program run in them) plus the tracer's process.\n\n", r.c.busyConns, r.c.busyRequests)
		b.WriteString("| tracer | requests/s | BPF runs per request (idle background) | BPF ns/request | user-space ns/request | tracer ns/request | idle background ns/request | **net tracer ns/request** | whole CPU ns/request | × floor |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, x := range r.busy {
			xw := "–"
			if bFloor != nil {
				xw = fmt.Sprintf("%.2f", median(x.whole)/median(bFloor.whole))
			}
			fmt.Fprintf(&b, "| %s | %s | %.4f (%.4f) | %s | %s | %s | %s | **%s** | %s | %s |\n", x.name, ms(x.rate, 0), median(x.runs), median(x.bgRuns),
				ms(x.bpf, 2), ms(x.user, 2), ms(x.tracer, 2), ms(x.background, 2), ms(x.net, 2), ms(x.whole, 0), xw)
		}
		b.WriteString("\n")
		for _, x := range []*busyResult{bFloor, bTw, bAll} {
			if x == nil {
				continue
			}
			var parts []string
			for _, name := range sortedKeys(x.perProg.bpfNs) {
				if runs := x.perProg.runs[name]; runs > 0 {
					parts = append(parts, fmt.Sprintf("`%s` %d runs × %.0f ns", name, runs, float64(x.perProg.bpfNs[name])/float64(runs)))
				}
			}
			if len(parts) == 0 {
				parts = []string{"no program ran"}
			}
			fmt.Fprintf(&b, "Per program, %s (all rounds, %d requests; the runs are the machine's other connections and timers): %s.\n\n", x.name, r.c.busyRequests*r.c.rounds, strings.Join(parts, ", "))
		}
		b.WriteString(busyLimits)
	}
	if len(r.bulk) > 0 {
		fmt.Fprintf(&b, "## Bulk transfer with 2%% loss\n\n4 connections send as fast as they can for 5 s from A to B, two network namespaces joined by a cable (veth pairs and a bridge) that drops 2%% of IP packets at random (nftables `numgen random`). Retransmissions and congestion-state changes come at a high rate.\n\n")
		fmt.Fprintf(&b, "| tracer | Mbit/s | tracer CPU (%% of one core) | BPF program runs/s | events/s read by tcpwatch | records lost |\n|---|---|---|---|---|---|\n")
		for _, x := range r.bulk {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", x.name, ms(x.mbps, 0), ms(x.cpuPct, 2), ms(x.runsPerS, 0), ms(x.eventsPerS, 0), ms(x.lost, 0))
		}
		b.WriteString("\n")
	}
	if len(r.timers) > 0 {
		fmt.Fprintf(&b, "## Timer load\n\nThe keepalive hook sits on `timer:timer_expire_entry/exit`, which fire for every kernel timer on the machine; it filters on the handler's address first. 2000 idle loopback connections with keepalive every second (answered) for 5 s.\n\n")
		fmt.Fprintf(&b, "| tracer | timer expiries/s | ns per expiry (entry + exit programs) | tracer CPU (%% of one core) |\n|---|---|---|---|\n")
		for _, x := range r.timers {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", x.name, ms(x.expiriesPerS, 0), ms(x.nsPerExpiry, 0), ms(x.cpuPct, 3))
		}
		b.WriteString("\n")
	}
	if len(r.drops) > 0 {
		fmt.Fprintf(&b, "## Drop storm\n\ntcpwatch's drop program sits on `skb:kfree_skb`, which fires for every packet the kernel drops, of any protocol, anywhere on the machine ([drops.md](drops.md)). A namespace of the harness drops %d UDP packets a second to 127.0.0.2 in its own OUTPUT chain (nftables), for %s a round: traffic of no TCP connection, every packet of it a run of the drop program that must end in a discard. *Nothing in trouble*: no connection was marked for 240 s, the program stops at the gate (a map lookup and a clock read); on a shared machine another user's retransmitting connection opens the gate too, which the spread shows. *One connection in trouble*: a loopback connection of the same namespace, whose segments its prerouting chain drops, has retransmitted, so the gate is open and each UDP drop is stopped by the port prefilter (its two ports read from the packet, one bit each). *ns per drop* is the kernel's own `run_time_ns / run_cnt` of the drop program (the floor's: its empty program on the same tracepoint); the tracer's CPU is every program of the tracer plus its process over the storm.\n\n", dropRate, dropStormFor)
		b.WriteString("| tracer | drops sent/s | drop program runs/s | **ns per drop** | × floor | tracer CPU (% of one core) |\n|---|---|---|---|---|---|\n")
		var floorNs float64
		for _, x := range r.drops {
			if x.name == dropsFloor {
				floorNs = median(x.nsPerDrop)
			}
		}
		for _, x := range r.drops {
			xf := "–"
			if floorNs > 0 && len(x.nsPerDrop) > 0 {
				xf = ratio(median(x.nsPerDrop), floorNs)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | **%s** | %s | %s |\n", x.name, ms(x.sentPerS, 0), ms(x.runsPerS, 0), ms(x.nsPerDrop, 0), xf, ms(x.cpuPct, 2))
		}
		b.WriteString("\n")
		b.WriteString(dropsLimits)
	}
	if m := r.memory; m != nil {
		fmt.Fprintf(&b, "## Memory\n\n`tcpwatch --all` (which tracks every connection) while %d concurrent loopback connections are open: both ends are connections of this host, so it tracks %d (opened in %s by helper processes, as one process may hold only RLIMIT_NOFILE descriptors).\n\n", m.conns, 2*m.conns, m.opened.Round(time.Millisecond))
		fmt.Fprintf(&b, "| moment | RSS | of which anonymous (heap, stacks) |\n|---|---|---|\n| idle, after start | %.1f MiB | %.1f MiB |\n| %d connections tracked | %.1f MiB | %.1f MiB |\n| 5 s after they closed | %.1f MiB | %.1f MiB |\n\n",
			mib(m.idleKiB.total), mib(m.idleKiB.anon), 2*m.conns, mib(m.peakKiB.total), mib(m.peakKiB.anon), mib(m.afterKiB.total), mib(m.afterKiB.anon))
		fmt.Fprintf(&b, "Kernel events read: %d, lost: %d, tracker evictions: %d.\n\n", m.events, m.lost, m.evictions)
	}
	if len(r.startFirst) > 0 {
		fmt.Fprintf(&b, "## Start-up\n\n| from exec to | ms |\n|---|---|\n| programs loaded | %s |\n| first event printed | %s |\n\n", ms(r.startLoaded, 1), ms(r.startFirst, 1))
	}
	if len(r.decode) > 0 {
		fmt.Fprintf(&b, "## User-space stages\n\nGo benchmarks, one record or narrative at a time: `Decode` is a ring-buffer record to a decoded event (tracer/wire); `DecodeAndTrack` is a record to a tracker update on a connection it knows (tracer/tracker); `TrackNewConnection` includes creating the connection's entry; `ChurnAll` is one `--all` connection's whole life (five state changes and the destroy) with the last 50 ms of narratives waiting, as under churn; `NarrativeJSON` renders one narrative as a JSON line (output; `NarrativeEncodingJSON` is the same through encoding/json, for comparison); `ReplayAll` replays the records the kernel sent during 200 loopback connections through an `--all` engine into JSON as fast as one reader takes them, their timestamps paced as 66,000 connections a second (so the tracker holds what it would hold on that host: TIME_WAIT 4-tuples, narratives in their grace), one op a record: `conns/s` is that reader's rate on this shared machine, `conns/cpu-s` the connections per CPU-second of the whole process (the collector's work on the other core included), `summary` the records as the kernel sends them with `--all` now (each end's normal lifecycle summarised: 2 records a connection), `every-record` as it sent them before (12 a connection, as `--events` still gets them), `short` the default output, `explain` the full records of `--explain`.\n\n```\n%s\n```\n", strings.Join(r.decode, "\n"))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func mib(kib int) float64 { return float64(kib) / 1024 }

// churnLimits says what keeps the churn figures where they are (see the
// per-tracepoint table above for the numbers behind it).
const churnLimits = `Where the cost goes, per stage:

- **Default mode: kernel programs only.** A normal connection sends no record, so user space does nothing for it (its user-space column is tcpwatch's idle process and the records of the machine's other, notable connections). The gap to the floor is in ` + "`inet_sock_set_state`" + `, about five runs per end: at connect it generates the socket cookie and writes the owner (pid, comm, time) into a cookie-keyed slot of an array map, a few tens of ns; at ESTABLISHED it generates the accepted socket's cookie (the timer programs can only read a cookie, and issue #8 wants keepalive records to reach the same connection); at the close transitions and CLOSE it checks for the socket's storage (a load of the socket's storage pointer, empty for a normal connection: the helper is called only for a socket that has storage) and the timer window. Socket-local storage, about 1 µs per connection to create and free, is now made only for a socket that becomes notable (it was made at every connect: the baseline column, when measured, is that). ` + "`tcp_destroy_sock`" + ` pays the same check; ` + "`tcp_cong_state_set`" + ` a ` + "`bpf_skc_to_tcp_sock`" + ` and a bitfield load.
- **` + "`--all`" + `: a normal lifecycle is one record per end, summarised in the kernel.** A state change of a socket nothing else is told about waits in a slot of a cookie-keyed array map (not socket storage, about 1 µs to create and free) and the socket's changes go to user space in one record at its destroy (bpf/lifecycle.h, as bcc's tcplife does): 2 records a loopback connection instead of 12, so ` + "`inet_sock_set_state`" + ` costs a slot lookup, a clock read and a few stores a run more than in the default mode, and ` + "`tcp_destroy_sock`" + ` fills and reserves the one record (hence its higher cost per run than the default mode's). A socket with anything else to tell (a reset, an error, a retransmission, a congestion-state change, a timer's doing) sends its states so far at that moment, then every event as before, so its story is whole; ` + "`--events`" + ` still gets a record per event. The tracker tells a summary as it would tell the records it stands for (it unfolds them, or, for a whole lifecycle that no entry holds, runs them on a scratch entry: tracer/tracker/whole.go): the same verdicts and timelines (a privileged test compares both streams of real connections). Measured by hand beside the build before it (` + "`tcpwatch --all`" + ` during 20,000 loopback connections, two series of 3 alternating rounds, load average 5-11): BPF 5,350-7,320 ns per connection before, 2,920-3,980 after. Issue #21's kernel half, measured per program beside the build before it (` + "`tcpwatch-bench --workloads churn --churn-tracers floor,tcpwatch,all,baseline-all --baseline <the build before>`" + `, 5 rounds of 20,000 connections, load average 2.2-3.6; the 4 rounds of each that another tracer's runs did not reach): ` + "`inet_sock_set_state`" + ` went from 262-303 to 179-207 ns a run, ` + "`tcp_destroy_sock`" + ` from 470-541 to 398-429, BPF per connection from 4,008 to 3,047 (median). A state change no longer asks the storage helper about a socket that has none (a load of its storage pointer says so), an accepted socket waits for its cookie in an array tagged with its address (it was a hash map: an insert, a lookup and a delete a connection), a connect reads the clock and makes its cookie once, the owner's names are loaded from the task (they were two helper calls), jiffies become ms by a multiplication (a record made five 64-bit divisions), and a socket's end looks for its troubled entry by direct loads (probe reads, while any connection on the host is in trouble). What is left of a state change is mostly its clock read (a fifth to a quarter of the program's time in a profile, ` + "`perf record -e cpu-clock -g`" + ` beside the churn: the TSC read behind ` + "`bpf_ktime_get_ns`" + `, once a step, which the timeline needs) and the slot's cache lines, which come from the other CPU when the socket's packets are handled there (a slot of two aligned lines, the first holding what every step touches, measured no better); of the destroy, the record (the ring's lock, and the stores into its lines).
- **` + "`--all`" + `: user space is what is left.** Fewer records did not make the process much cheaper: decoding and reading the ring were never where its time went. Per connection it tells two ends (each from the lifecycle record sent at its destroy; the TIME_WAIT memory of up to 65,536 4-tuples; the cookies destroyed in the last second), narrates them (two JSON lines of about 340 bytes: the short form, ` + "`--explain`" + ` for the full record) and, on a churn through one server port, tells a TIME_WAIT 4-tuple reopened for about two connections in five (` + "`time_wait_syn_accepted`" + `, a third line). Issue #21's work on it, measured beside the build before it: the TIME_WAIT memory is a ring with an open-addressed index of pointer-free keys (it was a Go map of ` + "`netip`" + ` 4-tuples and a time queue, both scanned by the collector), the destroyed cookies are bits in blocks of consecutive cookies (the kernel makes them from one counter; a hash set of 65,536 was a cache miss or two per end), told narratives and removed entries are reused (they were 2.4 KB of fresh memory per end), a notice's line is encoded without building its record, and the writer remembers the last 256 flows' Community IDs (both ends of a connection of this host, and its notice, carry the same SHA-1). ` + "`BenchmarkReplayAll/summary/short`" + ` went from 134,000 to 208,000 connections per CPU-second (median of 6 runs each, alternating: 6.8 to 4.8 µs per connection; 2,431 to 66 bytes allocated per record), and live, beside the floor (` + "`tcpwatch-bench --workloads churn --churn-tracers floor,all,baseline-all --baseline <the build before>`" + `, 5 rounds of 20,000 connections, load average 1.9-2.1), user space went from 10,900 to 8,400 ns per connection, ` + "`--all`" + ` from 18.0× to 14.9× the floor (821 ns). Live costs more than the replay of the same records, and a profile says where: ` + "`perf record -e cpu-clock`" + ` of the running process beside the churn (2,000 samples a second, every thread, the kernel's part included; Go's own profiler samples at the scheduler's tick and misses a process that runs in 50 ms batches) gives 8.8 µs a connection live against the replay's 5.3. Of the 3.5 µs between them, 1.8 µs is TIME_WAIT: the churn's client ports come round again within TIME_WAIT, so about half the connections reopen a 4-tuple (` + "`time_wait_syn_accepted`" + `: 17,165 notices for 32,003 connections in one run, not the two in five once estimated), and each is a third line (about 1 µs a connection) and a lookup in the TIME_WAIT memory that finds (a second cache miss, into its ring), which the replay, its passes in namespaces of their own, never does; 0.4 µs is Go's runtime beside the engine (sysmon's wake-ups and the scheduler's hand-offs between threads), 0.2 µs reading the ring (a record is copied out of the mapped ring; the replay decodes its own), and the remaining 0.8 µs the same code running colder (the tracker's lookups and a narrative's release, 15-20% slower than in the replay, the churn running on both cores between two batches). The periodic work is about 1% (` + "`Engine.periodic`" + `: the loss counters, sock_diag dumps, the listeners' queues, CLOSE_WAIT scans), the collector under 1% (at its flood pace, 2 cycles in a run of 50,000 connections), and the memory return forces none during a churn (its three forced collections come at start-up). One cause was tcpwatch's own: its output pipe. A 64 KiB batch of lines into the default 64 KiB pipe waited until the reader had taken nearly all of it, and each wait cost a context switch, the reader's wake-up and Go's sysmon set polling every 20 µs again; with ` + "`--all`" + ` or ` + "`--events`" + ` tcpwatch now asks for a 1 MiB pipe when its output is one (` + "`F_SETPIPE_SZ`" + `, best effort): sysmon's sleeps went from 426 to 161 a second, its share of the process from 5.8-7.2% to 3.0-4.9%, and user space, beside the build before it (5 rounds, twice, load average 1.2-2.9), from 9,170 to 7,863 and from 9,592 to 8,879 ns per connection. Since then: a lifecycle record sent at its socket's destroy is told without an entry when nothing else could have found one (no entry holds its cookie or 4-tuple, the cookie is not one destroyed lately, the tracker is not full, no step is a listener's): tracer/tracker/whole.go runs the same steps on one scratch entry that no map, list or queue holds (it was the entry's maps, its closing queue, its removal and reuse, cold memory a connection), and a test compares it with the generic path over the churn, every recorded scenario summarised, and random streams; an owner's name is made once per name, not per connection; told narratives are reused oldest first (held 50 ms, none is warm when told, and taken in one order that repeats they are read as the memory prefetches); a reopened TIME_WAIT 4-tuple is found and forgotten in one look-up; a JSON string is scanned eight bytes at a time. ` + "`BenchmarkReplayAll/summary/short`" + ` went from about 200,000-220,000 to 310,000 connections per CPU-second (the last set of 10 alternating runs: 197,600 to 310,700, 5.1 to 3.2 µs per connection; ` + "`explain`" + ` 116,100 to 145,800; 1 to 0 allocations a record; every replayed line the same, byte for byte), and live, beside the build before (` + "`tcpwatch-bench --workloads churn --churn-tracers floor,all,baseline-all`" + `, six series of 5 rounds, load average 1.3-4.1), user space went from 6,613-9,433 to 5,647-8,279 ns per connection (the series' medians), 12-35% less in each series; the kernel half, which other users' programs on this machine inflated in some rounds, varied too much for the totals to say more (` + "`--all`" + ` at 10.8-12.9× the floor in the series it did not inflate, the build before at 12.7-15.4×). With the kernel half's work above as well (two more series, beside main with it, load average 1.0-1.6): user space 6,296 and 5,998 ns per connection against 7,468 and 8,967, ` + "`--all`" + ` at 11.3× and 11.5× the floor against 11.8× and 15.3×; the goal of 10× is not met yet. What is left is memory more than work: in a profile of the live process the costliest lines are cache misses, a narrative (about 1.2 KiB with its timeline) read cold when it is told after its 50 ms of grace, and the TIME_WAIT memory (a miss into 2 MiB of index at each end's ESTABLISHED, and into 7 MiB of ring when it finds). Four tries at them moved nothing measurable and were left out: the timeline kept inside the narrative until it is told, a narrative's lines read together before it is told, the short line's duration kept beside the timeline's header (its last step's line unread), a byte a slot in front of the TIME_WAIT index (the misses moved elsewhere). Reading the ring without copying each record waits for cilium/ebpf (v0.22, the latest release, copies each; its RawReader came after it) and would save a few tens of ns a record. The goal of 10× leaves user space about 4.5-5 µs a connection beside the kernel half's 3 µs (above); the replay's engine alone costs about 3.2 µs now. Since then a normal end is lighter to hold (tracer/tracker/held.go): a ` + "`" + `local_closed` + "`" + ` or ` + "`" + `peer_closed` + "`" + ` narrative is narrated into one narrative that stays in the cache, held while it waits as the facts it has (536 bytes, its steps as the entry keeps them) inline in a ring written and read in time order, and unpacked into one other reused narrative when it is told, its timeline made then (field by field: a ` + "`" + `Step` + "`" + ` literal was built aside and copied; the unpack of a six-step end, warm, 84 to 46 ns); anything the compact form cannot carry keeps the narrative whole, and a test walks every field of ` + "`" + `Narrative` + "`" + ` (it survives or is refused) and others compare both ways, the narratives and the lines written (text and JSON, short and ` + "`" + `--explain` + "`" + `), over every recorded scenario, summarised and not, the churn and random streams. The cold first loads of a narrative at its telling (enrich's ` + "`" + `cgroupID` + "`" + `, the short line's duration from the last step) went from 490 ms of a 6.5 s profile of ` + "`" + `BenchmarkReplayAll/summary/short` + "`" + ` to 60 ms of 10.1 s; packing and unpacking cost about 8% of it themselves (5.1% and 5.6%, less the timeline's making, 2.6%, paid before at the narration). Beside main (16 alternating runs of 1 s each, this shared machine noisy: one build's runs spread 1,360-2,320 ns a record): ` + "`" + `summary/short` + "`" + ` from 1,636 to 1,478 ns a record (medians; 302,700 to 334,500 connections per CPU-second, +11.5% the median of the paired runs, faster in 14 of 16 pairs, the best runs 1,468 and 1,367 ns); in two sets of 7 alternating runs of all four (paired medians), ` + "`" + `summary/short` + "`" + ` +18.5% and +11.9%, ` + "`" + `every-record/short` + "`" + ` +3.2% and +9.5%, ` + "`" + `summary/explain` + "`" + ` +1.3% and -2.3%, ` + "`" + `every-record/explain` + "`" + ` +0.3% and +4.3% (the encoding of the whole record dominates those). Over all 66 runs of each build of ` + "`" + `summary/short` + "`" + ` in the seven alternating sets of this work (the branch at its three stages): median 1,706 to 1,590 ns a record, first quartile 1,626 to 1,443, but the fastest run 1,298 (main) against 1,367: main's runs are spread wider, and the gain shows where other work shares the cache, as the live churn's does. No hardware counters here (` + "`" + `perf stat` + "`" + `: cache-misses, cycles, instructions not supported in this VM). Live, beside the build before it in the same rounds (` + "`" + `tcpwatch-bench --workloads churn --churn-tracers floor,all,baseline-all --baseline <the build before>` + "`" + `, 5 rounds of 20,000 connections, load average under 1): user space 4,739 ns per connection (rounds 4,446-5,215) against 5,731 (5,104-6,426), ` + "`" + `--all` + "`" + ` 7,474 against 8,588 ns per connection, 9.3× the floor (802 ns) against 10.7×. What is left to try: a kernel half that does less per state change, and the TIME_WAIT memory's misses (now the replay's costliest lines, 6.5% of it in ` + "`" + `fifoSet.findHashed` + "`" + `). Several readers, each owning a shard of the tracker, would raise the rate one host can keep up with, not lower the CPU per connection that this goal measures.
- **The machine's other load counts too.** The tracers see every connection on the machine, not only the workload's: other users' connections and tests (a soak running 1000 connections/s, end-to-end tests, a qemu guest) add runs and records to every tracer alike; ` + "`--all`" + ` tracks and narrates them all, so its figure is the most inflated of the lot.

`

// busyLimits says what the busy-server figures mean.
const busyLimits = `No tcpwatch program runs on the send/receive path any more: the program runs counted during a round (BPF runs per request, about a thousandth) are the machine's other connections and timers, at the same rate as in the idle interval after it, for the floor and tcpwatch alike, and tcpwatch's BPF time per request stays under a nanosecond. What is left is tcpwatch's process: it reads and narrates the records of the machine's other notable connections (other users' tests and soak) and wakes for its own timers (the 50 ms hold of narratives; ` + "`--all`" + ` also polls the ring every 50 ms), a cost per second, not per request. The net column subtracts what the same tracer spent while idle for as long right after the round; what remains is the variation of that other load between the two intervals, shown by its spread. The whole CPU per request (the workload's own, kernel included) is the same with every tracer within the machine's noise. The goal is judged on the net tracer figure against the floor's with 1 ns/request of slack (1.5× of about zero is zero).

`

// dropsLimits says what the drop storm's figures mean.
const dropsLimits = `The drop program's run includes the kernel's accounting of the run (two clock reads with BPF statistics on), which the floor pays too. At 100,000 drops a second of traffic that belongs to nothing in trouble, the ns per drop times 100,000 is the share of one CPU the drop path costs (100 ns per drop: 1 %); a healthy host drops far fewer packets, and most of the time no connection is in trouble, so the gate decides. Nothing of it runs on the send/receive path: a packet that is not dropped never reaches the program, and healthy churn (the churn table) does not run it at all.

`

// churn16Cores is the loopback churn a 16-core host produced (issue #21:
// 66,028 connections/s with --all, 48,007 by default), rounded down: the
// rate --all's one reader must sustain.
const churn16Cores = 60000

// replayRates reads the conns/cpu-s figure of each line of the named
// benchmark.
func replayRates(lines []string, name string) []float64 {
	var out []float64
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || !strings.HasPrefix(f[0], name+"-") && f[0] != name {
			continue
		}
		for i := 1; i < len(f); i++ {
			if f[i] == "conns/cpu-s" {
				if v, err := strconv.ParseFloat(f[i-1], 64); err == nil {
					out = append(out, v)
				}
			}
		}
	}
	return out
}
