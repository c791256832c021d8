// Command tcpwatch watches the Linux TCP stack and tells, live and per
// connection, why a connection is failing or died.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer"
)

const usage = `tcpwatch: why is this TCP connection failing, or why did it die?

Usage:
  tcpwatch [flags]          watch every TCP connection and narrate failures
  tcpwatch --events [flags] print every decoded kernel event
  tcpwatch check            show the kernel, its BTF and which hooks attach

Flags:
`

func main() {
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
	events     bool
	all        bool
	output     string
	duration   time.Duration
	kernelBTF  string
	ringSize   int
	maxSockets int
	pid        uint32
	port       uint16
	netns      uint32
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
	fs.StringVarP(&o.output, "output", "o", "text", "output format: text or json (JSON lines)")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (e.g. 30s, 5m); 0 runs until SIGINT/SIGTERM")
	fs.StringVar(&o.kernelBTF, "kernel-btf", "", "kernel BTF file, for kernels without /sys/kernel/btf/vmlinux")
	fs.IntVar(&o.ringSize, "ring-size", 4<<20, "ring buffer size in bytes (power of two)")
	fs.IntVar(&o.maxSockets, "max-sockets", 1<<17, "sockets the kernel-side table remembers (owner, state)")
	fs.Uint32Var(&o.pid, "pid", 0, "only connections owned by this process (tgid)")
	fs.Uint16Var(&o.port, "port", 0, "only connections with this port on either side")
	fs.Uint32Var(&o.netns, "netns", 0, "only connections in this network namespace (inode, as in ls -L /proc/PID/ns/net)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, usageError{err}
	}
	if o.duration < 0 {
		return nil, nil, usageError{fmt.Errorf("--duration must not be negative")}
	}
	if o.maxSockets <= 0 {
		return nil, nil, usageError{fmt.Errorf("--max-sockets must be positive")}
	}
	if o.ringSize < os.Getpagesize() || o.ringSize&(o.ringSize-1) != 0 {
		return nil, nil, usageError{fmt.Errorf("--ring-size must be a power of two of at least %d", os.Getpagesize())}
	}
	return o, fs.Args(), nil
}

func run(args []string, stdout, stderr io.Writer) error {
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
		MaxSockets:  o.maxSockets,
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

	w := output.NewWriter(stdout, format, output.Options{Color: isTerminal(stdout)})
	return watchEvents(ctx, t, w)
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

// watchEvents prints every event until ctx ends, then the lost-record count.
func watchEvents(ctx context.Context, t *tracer.Tracer, w *output.Writer) error {
	go func() {
		<-ctx.Done()
		t.Stop()
	}()
	var ev tracer.Event
	var n uint64
	for {
		err := t.Read(&ev)
		if errors.Is(err, tracer.ErrClosed) {
			break
		}
		if err != nil {
			return err
		}
		n++
		if err := w.Event(&ev, t.Kernel.ResetReasons); err != nil {
			if errors.Is(err, output.ErrClosedOutput) {
				return nil
			}
			return err
		}
	}
	lost, err := t.Lost()
	if err != nil {
		return err
	}
	return w.Stats(output.Stats{Events: n, Lost: lost})
}
