package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type report struct {
	c           config
	started     time.Time
	churn       []*churnResult
	bulk        []*bulkResult
	timers      []*timerResult
	memory      *memoryResult
	startLoaded []float64
	startFirst  []float64
	decode      []string
}

func newReport(c config) *report { return &report{c: c, started: time.Now()} }

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

func (r *report) write(path string) error {
	var b strings.Builder
	var uts unix.Utsname
	unix.Uname(&uts)
	fmt.Fprintf(&b, "# Performance\n\n")
	fmt.Fprintf(&b, "What tcpwatch costs, measured in one run beside the floor (empty BPF programs on the same tracepoints) and bpftrace printing each event on them.\n\n")
	fmt.Fprintf(&b, "- Machine: %s, %d cores, kernel %s\n", cpuModel(), numCPU(), unix.ByteSliceToString(uts.Release[:]))
	fmt.Fprintf(&b, "- Run: %s, %d rounds per configuration; figures are the median with the spread (min–max) of the rounds\n", r.started.UTC().Format("2006-01-02 15:04 MST"), r.c.rounds)
	fmt.Fprintf(&b, "- Reproduce: `make bench` (as root; it builds tcpwatch and runs `go run ./cmd/tcpwatch-bench`)\n")
	fmt.Fprintf(&b, "- CPU per unit of work = run time of the tracer's BPF programs (BPF_ENABLE_STATS) + CPU time of its process (schedstat of all its threads), divided by the connections or events. Throughput on this shared 2-core machine swings by ±30%% between runs, so it is shown beside, not as the headline.\n\n")

	if len(r.churn) > 0 {
		none, floor, tw, all, bt := r.find("none"), r.find("floor (empty programs)"), r.find("tcpwatch"), r.find("tcpwatch --all"), r.find("bpftrace")
		fmt.Fprintf(&b, "## Connection churn on loopback\n\n%d connections per round (connect, one byte each way, close), 4 client workers, server closes first. The tracers' output goes to a pipe that the harness drains.\n\n", r.c.conns)
		fmt.Fprintf(&b, "| tracer | connections/s | vs no tracer | BPF programs run per connection | BPF ns/connection | user-space ns/connection | **total ns/connection** | × floor |\n|---|---|---|---|---|---|---|---|\n")
		for _, c := range r.churn {
			if c == nil {
				continue
			}
			ratio, xfloor := "–", "–"
			if none != nil {
				ratio = fmt.Sprintf("%.2f", median(c.rate)/median(none.rate))
			}
			if floor != nil && c.name != "none" {
				xfloor = fmt.Sprintf("%.1f", median(c.total)/median(floor.total))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | **%s** | %s |\n", c.name, ms(c.rate, 0), ratio, ms(c.runs, 1),
				ms(c.bpf, 0), ms(c.user, 0), ms(c.total, 0), xfloor)
		}
		b.WriteString("\n")
		for _, c := range []*churnResult{floor, tw, all} {
			if c == nil {
				continue
			}
			fmt.Fprintf(&b, "Per program, %s (last round): ", c.name)
			var parts []string
			for _, name := range sortedKeys(c.perProg.bpfNs) {
				runs := c.perProg.runs[name]
				if runs == 0 {
					continue
				}
				parts = append(parts, fmt.Sprintf("`%s` %.1f runs/conn × %.0f ns", name, float64(runs)/float64(r.c.conns), float64(c.perProg.bpfNs[name])/float64(runs)))
			}
			b.WriteString(strings.Join(parts, ", ") + ".\n\n")
		}
		if floor != nil && tw != nil && all != nil && bt != nil {
			fmt.Fprintf(&b, "Goals: default mode ≤ 3× the floor: **%.1f×**; `--all` ≤ 10× the floor: **%.1f×**, and ≤ 1/5 of bpftrace: **1/%.1f**.\n\n",
				median(tw.total)/median(floor.total), median(all.total)/median(floor.total), median(bt.total)/median(all.total))
			b.WriteString(churnLimits)
		}
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
		fmt.Fprintf(&b, "## Decode\n\nGo benchmarks: `Decode` is a ring-buffer record to a decoded event; `DecodeAndTrack` is a record to a tracker update (decode, then the connection tracker) on a connection it knows; `TrackNewConnection` includes creating the connection's entry.\n\n```\n%s\n```\n", strings.Join(r.decode, "\n"))
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
// per-program lines above for the numbers behind it).
const churnLimits = `What limits them:

- **Default mode.** User space does nothing for a normal connection, so the cost is in the kernel. Most of the gap to the floor is the owner. The issue asks tcpwatch to remember, in the kernel, the pid and comm of every socket's owner, taken when a task acts on the socket. That means creating socket-local storage twice per connection: at connect for the client, and at the first receive for the accepted socket. Each creation costs about a microsecond; compare ` + "`tw_sock_recv`" + ` and ` + "`tw_set_state`" + ` with their floor. Next come a storage lookup and a few direct loads on each tracepoint. The empty programs read nothing at all. A cookie-keyed hash, tried first, cost more (about 21× the floor, with its lookups).
- **` + "`--all`" + `.** The kernel sends about 20 records per connection, each filled by direct loads (about 9 µs per connection). User space decodes and tracks them, then writes two JSON narratives with a timeline per connection (` + "`local_closed`" + `, ` + "`peer_closed`" + `), about 24 µs per connection. That user-space work is what keeps ` + "`--all`" + ` above 10× the floor. bpftrace prints one short line per event and writes no narrative, yet costs more again: its per-event helpers and printf make its kernel side about 10 times tcpwatch's.

`
