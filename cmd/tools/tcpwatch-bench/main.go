// Command tcpwatch-bench measures what tracing costs, in one run, beside the
// floor (empty programs on the same tracepoints) and bpftrace, and writes
// docs/performance.md. `make bench` runs it; paths are relative to the
// root of the tcpwatch tree, wherever in the tree it is started.
//
// The headline figure is CPU spent by the tracer per unit of work: the run
// time of its BPF programs (BPF_ENABLE_STATS) plus the CPU time of its own
// process (schedstat of every thread), divided by the connections or events
// the workload produced. Wall-clock throughput on a shared 2-core machine
// swings too much to be the headline; it is reported beside it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/cmd/tools/internal/reporoot"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "hold" {
		if err := runHold(os.Args[2]); err != nil {
			fmt.Fprintf(os.Stderr, "tcpwatch-bench hold: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		if err := runFloor(); err != nil {
			fmt.Fprintf(os.Stderr, "tcpwatch-bench floor: %v\n", err)
			os.Exit(1)
		}
		return
	}
	// Paths (./tcpwatch, docs/, the product's packages) are the tree's.
	if err := reporoot.Chdir(); err != nil {
		fmt.Fprintf(os.Stderr, "tcpwatch-bench: %v\n", err)
		os.Exit(1)
	}
	if len(os.Args) > 1 && os.Args[1] == "soak" {
		// The long memory soak (soak.go), apart from the cost workloads.
		if err := runSoak(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "tcpwatch-bench soak: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "tcpwatch-bench: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	tcpwatch  string
	baseline  string // another tcpwatch binary, measured beside in churn (A/B)
	out       string
	rounds    int
	conns     int
	workloads []string
	// churnTracers picks the churn workload's configurations by short
	// name (churnTracerNames); empty runs them all.
	churnTracers []string
	memConns     int
	// busy server
	busyConns    int
	busyRequests int
}

func run(args []string) error {
	var c config
	fs := pflag.NewFlagSet("tcpwatch-bench", pflag.ContinueOnError)
	fs.StringVar(&c.tcpwatch, "tcpwatch", "./tcpwatch", "the tcpwatch binary to measure")
	fs.StringVar(&c.baseline, "baseline", "", "another tcpwatch binary (e.g. built from main) to measure beside in the churn rounds, default mode")
	fs.StringVar(&c.out, "out", "docs/performance.md", "where to write the report")
	fs.IntVar(&c.rounds, "rounds", 5, "rounds per configuration (median and spread are reported)")
	fs.IntVar(&c.conns, "conns", 20000, "connections per churn round")
	fs.IntVar(&c.memConns, "mem-conns", 50000, "concurrent loopback connections for the memory workload (each has two tracked ends)")
	fs.IntVar(&c.busyConns, "busy-conns", 8, "persistent connections of the busy-server workload")
	fs.IntVar(&c.busyRequests, "busy-requests", 200000, "one-byte requests per busy-server round (all connections)")
	fs.StringSliceVar(&c.workloads, "workloads", []string{"churn", "busy", "bulk", "timers", "drops", "memory", "startup", "decode"}, "workloads to run")
	fs.StringSliceVar(&c.churnTracers, "churn-tracers", nil, "the churn workload's configurations: none, floor, tcpwatch, all, bpftrace, baseline, baseline-all (default: all but baseline-all; baseline needs --baseline); with --out elsewhere, for quick A/B work")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root (it loads BPF programs and builds namespaces)")
	}
	if _, err := os.Stat(c.tcpwatch); err != nil {
		return fmt.Errorf("--tcpwatch: %w (make bench builds it)", err)
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enabling BPF run-time statistics: %w", err)
	}
	defer stats.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := newReport(c)
	for _, w := range c.workloads {
		fmt.Fprintf(os.Stderr, "== %s\n", w)
		var err error
		switch w {
		case "churn":
			err = benchChurn(ctx, c, rep)
		case "busy":
			err = benchBusy(ctx, c, rep)
		case "bulk":
			err = benchBulk(ctx, c, rep)
		case "timers":
			err = benchTimers(ctx, c, rep)
		case "drops":
			err = benchDrops(ctx, c, rep)
		case "memory":
			err = benchMemory(ctx, c, rep)
		case "startup":
			err = benchStartup(ctx, c, rep)
		case "decode":
			err = benchDecode(ctx, c, rep)
		default:
			err = fmt.Errorf("unknown workload %q", w)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", w, err)
		}
		// Written after every workload, so a later failure loses nothing.
		if err := rep.write(c.out); err != nil {
			return err
		}
	}
	return nil
}

// runFloor loads and attaches the empty programs and waits to be stopped.
func runFloor() error {
	var objs floorObjects
	if err := loadFloorObjects(&objs, nil); err != nil {
		return err
	}
	defer objs.Close()
	progs := []*ebpf.Program{objs.FloorSetState, objs.FloorRetransmit, objs.FloorSendReset, objs.FloorRecvReset,
		objs.FloorError, objs.FloorCongState, objs.FloorDestroy,
		objs.FloorTimerEntry, objs.FloorTimerExit, objs.FloorDrop, objs.FloorSynack}
	for _, p := range progs {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return err
		}
		defer l.Close()
	}
	fmt.Println("attached")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return nil
}

// bpftraceScript prints each event on tcpwatch's tracepoints, the way
// people watch TCP today.
const bpftraceScript = `
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { printf("state %d %d %d %d\n", args->sport, args->dport, args->oldstate, args->newstate); }
tracepoint:tcp:tcp_retransmit_skb { printf("retransmit %d %d %d\n", args->sport, args->dport, args->state); }
tracepoint:tcp:tcp_send_reset { printf("send_reset %d %d\n", args->state, args->reason); }
tracepoint:tcp:tcp_receive_reset { printf("receive_reset %d %d\n", args->sport, args->dport); }
tracepoint:sock:inet_sk_error_report /args->error != 0/ { printf("error %d %d %d\n", args->sport, args->dport, args->error); }
tracepoint:tcp:tcp_cong_state_set { printf("cong %d %d %d\n", args->sport, args->dport, args->cong_state); }
tracepoint:tcp:tcp_destroy_sock { printf("destroy %d %d\n", args->sport, args->dport); }
`

// ensureTracefs mounts tracefs where bpftrace looks for tracepoint formats.
func ensureTracefs() error {
	if _, err := os.Stat("/sys/kernel/tracing/events"); err == nil {
		return nil
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mounting tracefs for bpftrace: %w", err)
	}
	return nil
}

// drain copies r to w until r ends, so a tracer never blocks on its output.
func drain(r io.Reader, w io.Writer) { _, _ = io.Copy(w, r) }

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(xs []float64) (lo, hi float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	lo, hi = xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown"
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
