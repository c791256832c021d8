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
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcpwatch/tcpwatch/lab"
	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

const usage = `tcpwatch: why is this TCP connection failing, or why did it die?

Usage:
  tcpwatch [flags]          watch every TCP connection and narrate failures
  tcpwatch --events [flags] print every decoded kernel event
  tcpwatch check            show the kernel, its BTF and which hooks attach
  tcpwatch lab ...          reproduce a failure scenario in namespaces (tcpwatch lab --help)

Flags:
`

func main() {
	if lab.IsAgent() {
		os.Exit(lab.AgentMain(os.Args[1:]))
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "tcpwatch: %v\n", err)
		os.Exit(exitCode(err))
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, usageError{err}
	}
	if o.duration < 0 {
		return nil, nil, usageError{fmt.Errorf("--duration must not be negative")}
	}
	if o.addrText != "" {
		p, err := parsePrefix(o.addrText)
		if err != nil {
			return nil, nil, usageError{err}
		}
		o.addr = p
	}
	if o.maxConns <= 0 {
		return nil, nil, usageError{fmt.Errorf("--max-connections must be positive")}
	}
	if o.ringSize < os.Getpagesize() || o.ringSize&(o.ringSize-1) != 0 {
		return nil, nil, usageError{fmt.Errorf("--ring-size must be a power of two of at least %d", os.Getpagesize())}
	}
	return o, fs.Args(), nil
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "lab" {
		return runLab(args[1:], stdout, stderr)
	}
	o, rest, err := parseFlags(args, stderr)
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
	if len(rest) > 0 {
		switch rest[0] {
		case "check":
			if len(rest) > 1 {
				return usageError{fmt.Errorf("check takes no arguments")}
			}
			return runCheck(o, stdout)
		default:
			return usageError{fmt.Errorf("unknown command %q (try --help)", rest[0])}
		}
	}
	// A closed stdout must surface as EPIPE on write, not kill us with SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}

	t, err := tracer.New(tracer.Config{
		All:         o.all || o.events,
		RingSize:    o.ringSize,
		FilterNetNS: o.netns,
		FilterPort:  o.port,
		FilterPID:   o.pid,
		KernelBTF:   o.kernelBTF,
	})
	if err != nil {
		return err
	}
	defer t.Close()
	warnMissingHooks(t, stderr)

	w := output.NewWriter(stdout, format, output.Options{Color: isTerminal(stdout), Explain: o.explain})
	err = watch(ctx, t, w, o, seedExisting(t, o, stderr))
	if errors.Is(err, output.ErrClosedOutput) {
		return nil // the reader went away: not a failure
	}
	return err
}

// seedExisting finds the connections that existed before tcpwatch: their
// owners go to the kernel half, and those already in trouble are returned
// for the tracker to narrate at once.
func seedExisting(t *tracer.Tracer, o *options, stderr io.Writer) []wire.Event {
	socks, err := sockdiag.Snapshot(o.netns)
	if err != nil {
		fmt.Fprintf(stderr, "tcpwatch: warning: existing connections only partly known: %v\n", err)
	}
	mono, wall := wire.MonotonicNow(), time.Now()
	var trouble []wire.Event
	for i := range socks {
		s := &socks[i]
		if s.Cookie == 0 {
			continue
		}
		if s.PID == 0 {
			continue
		}
		if err := t.SeedOwner(int(s.PID), s.FD, s.Comm, s.InTrouble()); err != nil {
			// The process may have closed it or exited meanwhile: not worth a warning.
			continue
		}
		if s.InTrouble() {
			trouble = append(trouble, s.Event(mono, wall))
		}
	}
	return trouble
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

// userFilter applies the filters the kernel cannot: process name and CIDR.
type userFilter struct {
	comm string
	addr netip.Prefix
}

func (f userFilter) match(pid uint32, comm string, local, remote netip.Addr) bool {
	if f.comm != "" && comm != f.comm {
		return false
	}
	if f.addr.IsValid() && !f.addr.Contains(local.Unmap()) && !f.addr.Contains(remote.Unmap()) {
		return false
	}
	return true
}

// tickEvery is how often the tracker is told the time when no event comes,
// so that closes are narrated promptly.
const tickEvery = 100 * time.Millisecond

// watch runs the pipeline until ctx ends: kernel events, then either raw
// event output (--events) or the connection tracker and its narratives.
func watch(ctx context.Context, t *tracer.Tracer, w *output.Writer, o *options, existing []wire.Event) error {
	go func() {
		<-ctx.Done()
		t.Stop()
	}()
	filter := userFilter{comm: o.comm, addr: o.addr}
	reasons := t.Kernel.ResetReasons
	var writeErr error
	var tr *tracker.Tracker
	if !o.events {
		cfg := tracker.Config{All: o.all, MaxConns: o.maxConns, ResetReasons: reasons}
		if o.all {
			cfg.Notices = func(n *tracker.Notice) {
				if writeErr == nil && filter.match(n.PID, n.Comm, n.Local.Addr(), n.Remote.Addr()) {
					writeErr = w.Notice(n)
				}
			}
		}
		tr = tracker.New(cfg, func(n *tracker.Narrative) {
			if writeErr == nil && filter.match(n.PID, n.Comm, n.Local.Addr(), n.Remote.Addr()) {
				writeErr = w.Narrative(n)
			}
		})
	}

	if tr != nil {
		for i := range existing {
			tr.Handle(&existing[i])
		}
	}

	var record io.Writer
	if o.record != "" {
		f, err := os.OpenFile(o.record, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("--record: %w", err)
		}
		defer f.Close()
		bw := bufio.NewWriter(f)
		defer bw.Flush()
		record = bw
	}

	var ev wire.Event
	var events uint64
	var mem memoryReturn
	tick := tickEvery
	if o.all || o.events {
		tick = tracer.PollInterval
	}
	for writeErr == nil {
		t.SetDeadline(time.Now().Add(tick))
		err := t.Read(&ev)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if tr != nil {
				tr.Tick(wire.MonotonicNow())
				mem.afterTick(tr.Stats().Tracked)
			}
			continue
		}
		if errors.Is(err, tracer.ErrClosed) {
			break
		}
		if err != nil {
			return err
		}
		events++
		if record != nil {
			if err := wire.WriteRecord(record, &ev); err != nil {
				return fmt.Errorf("--record: %w", err)
			}
		}
		if tr == nil {
			if filter.match(ev.PID, ev.Comm(), ev.Local.Addr(), ev.Remote.Addr()) {
				writeErr = w.Event(&ev, reasons)
			}
			continue
		}
		tr.Handle(&ev)
		// With --all, routine happenings that are not narratives still show.
		if o.all && ev.Kind == wire.KindKeepalive && ev.Flags&wire.FlagProbeAnswered != 0 &&
			filter.match(ev.PID, ev.Comm(), ev.Local.Addr(), ev.Remote.Addr()) && writeErr == nil {
			writeErr = w.Event(&ev, reasons)
		}
	}
	if writeErr != nil {
		return writeErr
	}
	stats := output.Stats{Events: events}
	if tr != nil {
		tr.Flush(wire.MonotonicNow())
		if writeErr != nil {
			return writeErr
		}
		ts := tr.Stats()
		stats.Narratives, stats.Evictions, stats.Tracked = ts.Narratives, ts.Evictions, ts.Tracked
	}
	lost, err := t.Lost()
	if err != nil {
		return err
	}
	stats.Lost = lost
	return w.Stats(stats)
}

// memoryReturn gives memory back to the system after the tracker shrinks a
// lot (a burst of connections ended): the Go runtime would otherwise keep
// the peak's pages for minutes.
type memoryReturn struct{ peak int }

func (m *memoryReturn) afterTick(tracked int) {
	m.peak = max(m.peak, tracked)
	if m.peak >= 10000 && tracked < m.peak/4 {
		debug.FreeOSMemory()
		m.peak = tracked
	}
}
