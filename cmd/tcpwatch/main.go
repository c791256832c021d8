// Command tcpwatch watches the Linux TCP stack and tells, live and per
// connection, why a connection is failing or died.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/exposure"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
	"github.com/tcpwatch/tcpwatch/tracer/incident/stage"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

const usage = `tcpwatch: why is this TCP connection failing, or why did it die?

Usage:
  tcpwatch [flags]          watch every TCP connection and narrate failures
  tcpwatch --events [flags] print every decoded kernel event
  tcpwatch top [flags]      full-screen view of the open incidents and their connections
  tcpwatch check            show the kernel, its BTF and which hooks attach
  tcpwatch exposure [flags] list every connection by when its kernel would notice a silent peer
  tcpwatch lab ...          reproduce a failure scenario in namespaces (tcpwatch lab --help)

Flags:
`

func main() {
	// Every line on stderr starts with "tcpwatch: ", even the later lines
	// of a multi-line error or warning.
	stderr := newLinePrefixer(os.Stderr)
	stopProfile := startCPUProfile(stderr)
	err := run(os.Args[1:], os.Stdout, stderr)
	stopProfile()
	if err != nil {
		fmt.Fprintf(stderr, "tcpwatch: %v\n", err)
	}
	stderr.Flush()
	if err != nil {
		os.Exit(exitCode(err))
	}
}

// startCPUProfile writes a CPU profile of the whole run to the file named
// by TCPWATCH_CPUPROFILE, if set (for performance work: read it with
// go tool pprof -top; the run must end with SIGINT, SIGTERM or --duration
// for the profile to be complete). Deliberately not a flag: it is for the
// people who measure tcpwatch, not for its users.
func startCPUProfile(stderr io.Writer) (stop func()) {
	path := os.Getenv("TCPWATCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tcpwatch: warning: TCPWATCH_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// usageError marks a mistake in the command line (exit 2, like flag parsing).
type usageError struct{ error }

func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

type options struct {
	events    bool
	all       bool
	conns     bool
	explain   bool
	record    string
	maxConns  int
	comm      string
	addr      netip.Prefix
	addrText  string
	output    string
	duration  time.Duration
	kernelBTF string
	ringSize  int
	pid       uint32
	port      uint16
	netns     uint32
	// exposureEvery is how often watch mode takes an exposure snapshot
	// for the metrics and the stats record; 0 never.
	exposureEvery time.Duration
	// closeWaitAfter is the close_wait_stuck threshold.
	closeWaitAfter time.Duration
	fleet          fleetOptions
	pipelines      pipelineOptions
}

func parseFlags(args []string, stderr io.Writer) (*options, []string, error) {
	o := &options{}
	fs := pflag.NewFlagSet("tcpwatch", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.BoolVar(&o.events, "events", false, "print every decoded kernel event instead of narratives")
	fs.BoolVar(&o.all, "all", false, "also narrate normal lifecycles and routine kernel events")
	fs.BoolVar(&o.conns, "connections", false, "also tell each connection of an incident (2+ connections to one peer in trouble) on its own line, in full")
	fs.BoolVar(&o.explain, "explain", false, "text output: add each narrative's explanation (JSON always has it)")
	fs.StringVar(&o.record, "record", "", "also append every kernel event to this file (hex records, replayable in tests)")
	fs.StringVarP(&o.output, "output", "o", "text", "output format: text or json (JSON lines)")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (e.g. 30s, 5m); 0 runs until SIGINT/SIGTERM")
	fs.StringVar(&o.kernelBTF, "kernel-btf", "", "kernel BTF file, for kernels without /sys/kernel/btf/vmlinux")
	fs.IntVar(&o.ringSize, "ring-size", 4<<20, "ring buffer size in bytes (power of two)")
	fs.Uint32Var(&o.pid, "pid", 0, "only connections owned by this process (tgid)")
	fs.Uint16Var(&o.port, "port", 0, "only connections with this port on either side")
	fs.Uint32Var(&o.netns, "netns", 0, "only connections in this network namespace (inode: stat -L -c %i /proc/PID/ns/net)")
	fs.StringVar(&o.comm, "comm", "", "only connections owned by a process with this name")
	fs.StringVar(&o.addrText, "addr", "", "only connections with an address in this CIDR (or address) on either side")
	fs.IntVar(&o.maxConns, "max-connections", 1<<18, "connections the tracker remembers (least recently active evicted)")
	fs.DurationVar(&o.exposureEvery, "exposure-every", 30*time.Second, "watch mode: count connections by when a silent peer would be noticed (tcpwatch exposure) this often, for --metrics and the stats record; 0 turns it off")
	fs.DurationVar(&o.closeWaitAfter, "close-wait-after", tracker.DefaultCloseWaitAfter, "tell close_wait_stuck when a process keeps a connection its peer closed this long without closing it (a socket scan every half of it, at most 30s, finds them); 0 never")
	o.fleet.addFlags(fs)
	o.pipelines.addFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, usageError{err}
	}
	if o.duration < 0 {
		return nil, nil, usageError{fmt.Errorf("--duration must not be negative")}
	}
	if o.closeWaitAfter < 0 {
		return nil, nil, usageError{fmt.Errorf("--close-wait-after must not be negative (0 turns it off)")}
	}
	if o.exposureEvery != 0 && o.exposureEvery < time.Second {
		return nil, nil, usageError{fmt.Errorf("--exposure-every must be 0 (off) or at least 1s")}
	}
	if fs.Changed("addr") {
		p, err := parsePrefix(o.addrText)
		if err != nil {
			return nil, nil, usageError{err}
		}
		o.addr = p
	}
	if o.maxConns <= 0 {
		return nil, nil, usageError{fmt.Errorf("--max-connections must be positive")}
	}
	if o.ringSize < os.Getpagesize() || o.ringSize > maxRingSize || o.ringSize&(o.ringSize-1) != 0 {
		return nil, nil, usageError{fmt.Errorf("--ring-size must be a power of two from %d to %d (1 GiB)", os.Getpagesize(), maxRingSize)}
	}
	if fs.Changed("pid") {
		if limit := pidMax(); o.pid == 0 || o.pid >= limit {
			return nil, nil, usageError{fmt.Errorf("--pid %d is not a process id (the kernel's pid_max is %d)", o.pid, limit)}
		}
	}
	if fs.Changed("kernel-btf") {
		if err := checkBTFFile(o.kernelBTF); err != nil {
			return nil, nil, usageError{err}
		}
	}
	if fs.Changed("port") && o.port == 0 {
		return nil, nil, usageError{errors.New("--port must be between 1 and 65535")}
	}
	if fs.Changed("comm") && (o.comm == "" || len(o.comm) > 15) {
		return nil, nil, usageError{errors.New("--comm takes a process name of 1 to 15 bytes (the kernel's TASK_COMM_LEN)")}
	}
	if err := o.fleet.check(fs); err != nil {
		return nil, nil, usageError{err}
	}
	if err := o.pipelines.check(fs); err != nil {
		return nil, nil, usageError{err}
	}
	return o, fs.Args(), nil
}

// closeWaitThreshold turns the flag (0: never) into the tracker's setting
// (negative: never).
func closeWaitThreshold(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// maxRingSize bounds --ring-size: the kernel takes up to 4 GiB but a
// ring that large only delays loss while pinning memory; 1 GiB is plenty.
const maxRingSize = 1 << 30

// maxBTFSize bounds --kernel-btf: a kernel's BTF is a few MiB; a file
// far larger (or endless, like /dev/zero) is not one.
const maxBTFSize = 256 << 20

func checkBTFFile(path string) error {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("--kernel-btf: %w", err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("--kernel-btf %s is not a regular file", path)
	case st.Size() > maxBTFSize:
		return fmt.Errorf("--kernel-btf %s is %d bytes, more than any kernel's BTF (%d)", path, st.Size(), maxBTFSize)
	}
	return nil
}

// pidMax is the kernel's bound on process ids (kernel.pid_max).
func pidMax() uint32 {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return 1 << 22 // PID_MAX_LIMIT
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 1 << 22
	}
	return uint32(v)
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "lab" {
		return runLab(args[1:], stdout, stderr)
	}
	o, rest, err := parseFlags(args, stdout) // only --help writes there
	if errors.Is(err, pflag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	format, err := output.ParseFormat(o.output)
	if err != nil {
		return usageError{err}
	}
	top := false
	if len(rest) > 0 {
		switch rest[0] {
		case "top":
			if len(rest) > 1 {
				return usageError{fmt.Errorf("top takes no arguments")}
			}
			if o.events || format != output.Text {
				return usageError{fmt.Errorf("top shows incidents on the terminal: not with --events or -o json")}
			}
			if o.pipelines.otlpURL != "" {
				return usageError{fmt.Errorf("top shows incidents on the terminal: not with --otlp (run tcpwatch --otlp beside it)")}
			}
			if err := haveTerminal(); err != nil {
				return err
			}
			top = true
		case "check":
			if len(rest) > 1 {
				return usageError{fmt.Errorf("check takes no arguments")}
			}
			return runCheck(o, stdout)
		case "exposure":
			if len(rest) > 1 {
				return usageError{fmt.Errorf("exposure takes no arguments")}
			}
			return runExposure(o, format, stdout, stderr)
		default:
			return usageError{fmt.Errorf("unknown command %q (try --help)", rest[0])}
		}
	}
	// A closed stdout must surface as EPIPE on write, not kill us with SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)

	var record *bufio.Writer
	if o.record != "" {
		f, err := os.OpenFile(o.record, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("--record: %w", err)
		}
		defer f.Close()
		record = bufio.NewWriter(f)
	}
	mode := engine.ModeDefault
	switch {
	case o.events:
		mode = engine.ModeEvents
	case o.all:
		mode = engine.ModeAll
	}
	engine.TuneGC(mode, os.Getenv)
	cfg := engine.Config{
		Mode:           mode,
		MaxConns:       o.maxConns,
		CloseWaitAfter: closeWaitThreshold(o.closeWaitAfter),
		Filter:         engine.Filter{PID: o.pid, Comm: o.comm, Addr: o.addr, Port: o.port, NetNS: o.netns},
		Warn:           func(err error) { fmt.Fprintf(stderr, "tcpwatch: warning: %v\n", err) },
	}
	if record != nil {
		cfg.Record = record
	}
	fleet, err := o.fleet.setup(&cfg)
	if err != nil {
		return err
	}
	defer fleet.close()
	exporter, err := o.pipelines.startOTLP(fleet, &cfg, o.explain)
	if err != nil {
		return err
	}
	t, err := tracer.New(cfg.Kernel(tracer.Config{RingSize: o.ringSize, KernelBTF: o.kernelBTF}))
	if err != nil {
		return err
	}
	defer t.Close()
	// Until now SIGINT and SIGTERM kept their default action, so a start-up
	// stuck on a slow file or a verifier can be stopped; from here, with the
	// programs attached, they end the run cleanly with a stats line.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	warnMissingHooks(t, stderr)
	// One socket iterator for both scans, loaded now, while tcpwatch
	// holds CAP_BPF: close_wait_stuck's (every engine.CloseWaitEvery of
	// the threshold) and the exposure gauge's. The gauge's reads mark
	// stuck sockets too, which only makes their end come sooner.
	var scanner *tracer.SocketReader
	if cfg.CloseWaitAfter > 0 && !o.events {
		r, err := tracer.OpenSocketReaderWith(tracer.SocketReaderOptions{ConnectionsOnly: true,
			MarkCloseWait: t, CloseWaitAfter: cfg.CloseWaitAfter})
		if err != nil {
			fmt.Fprintf(stderr, "tcpwatch: warning: no close_wait_stuck (the socket iterator): %v\n", err)
		} else {
			defer r.Close()
			cfg.ScanCloseWaits = engine.CloseWaitScanner(r, o.netns, nil)
			scanner = r
		}
	}
	var exp *exposureWatch
	if o.exposureEvery > 0 && !o.events {
		var publish func(map[string]exposure.Tally)
		if fleet.metrics != nil {
			publish = fleet.metrics.Exposure
		}
		warn := func(err error) { fmt.Fprintf(stderr, "tcpwatch: warning: %v\n", err) }
		exp, err = openExposureWatch(o, scanner, cfg.Cgroups, publish, warn)
		if err != nil {
			warn(fmt.Errorf("no exposure figures (--exposure-every): %w", err))
		}
		defer exp.close()
	}
	if k := t.Kernel; k.BelowMinimum() {
		fmt.Fprintf(stderr, "tcpwatch: warning: kernel %s is older than %s, the oldest tcpwatch is tested on: some verdicts may be missing or wrong\n", k.Release, tracer.MinKernel)
	}
	// The connections older than tcpwatch are read before the
	// capabilities go: a caller that waits for that (the tests do) knows
	// that whatever it closes from then on is told as a connection that
	// predates tcpwatch.
	eng := engine.New(t, cfg)
	eng.ReadExisting()
	// The programs are attached: keep only the capabilities reading /proc
	// and other namespaces' socket tables needs (caps.go). This takes a
	// while (an all-threads syscall per capability): signals are already
	// heard.
	if err := dropCapabilities(); err != nil {
		fmt.Fprintf(stderr, "tcpwatch: warning: %v\n", err)
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}

	if exp != nil {
		exp.start(ctx, o.exposureEvery)
	}
	if top {
		err := runTop(ctx, eng, fleet)
		if record != nil {
			if ferr := record.Flush(); ferr != nil && err == nil {
				err = fmt.Errorf("--record: %w", ferr)
			}
		}
		return err
	}
	if mode != engine.ModeDefault {
		growOutputPipe(stdout)
	}
	w := output.NewWriter(stdout, format, output.Options{Color: isTerminal(stdout), Explain: o.explain,
		Host: fleet.host, Batch: true, Connections: o.conns, CommunityIDSeed: o.pipelines.communityIDSeed,
		Schema: o.pipelines.schema})
	telling := stage.Lines
	if format == output.JSON {
		telling = stage.Records
	}
	incidents := stage.New(stage.Options{Telling: telling, Connections: o.conns,
		SharedFate: (&incident.SharedFateReader{Keepalive: socketKeepalive(scanner)}).Read, Observe: fleet.observeIncident,
		InTrouble: fleet.incidentInTrouble()})
	// The exporter comes after the incident stage, so that it sends the
	// incidents' records too.
	stages := append(fleet.stages(), incidents.Stage)
	if exporter != nil {
		stages = append(stages, exporter.Stage)
	}
	stats, err := eng.Run(ctx, engine.Chain(w, stages...))
	if err == nil {
		err = incidents.End()
	}
	if err != nil {
		w.Flush() // what was told before the failure
	}
	otlpStats := stopOTLP(exporter)
	if record != nil {
		if ferr := record.Flush(); ferr != nil && err == nil {
			err = fmt.Errorf("--record: %w", ferr)
		}
	}
	if errors.Is(err, output.ErrClosedOutput) {
		return nil // the reader went away: not a failure
	}
	if err != nil {
		return err
	}
	exp.stats(w)
	closed := map[string]int{}
	for outcome, n := range incidents.Model().Stats().Incidents {
		closed[string(outcome)] = n
	}
	w.IncidentStats(closed)
	err = w.StatsWithOTLP(stats, otlpStats)
	if err == nil {
		err = w.Flush()
	}
	if errors.Is(err, output.ErrClosedOutput) {
		return nil
	}
	return err
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("--addr %q is neither a CIDR nor an address", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && output.IsTerminal(f)
}

// warnMissingHooks says, once, what tcpwatch cannot see on this kernel.
func warnMissingHooks(t *tracer.Tracer, stderr io.Writer) {
	for _, h := range t.Hooks {
		if !h.Attached {
			fmt.Fprintf(stderr, "tcpwatch: warning: not watching %s (%s): no %s\n", h.Name, h.Reason, h.Loses)
		}
	}
}
