package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/tcpwatch/tcpwatch/tracer"
)

// runCheck loads and attaches everything, reports what this kernel gives
// tcpwatch, then detaches.
func runCheck(o *options, out io.Writer) error {
	t, err := tracer.New(tracer.Config{KernelBTF: o.kernelBTF, RingSize: o.ringSize})
	if err != nil {
		return err
	}
	defer t.Close()
	// Buffered and flushed once: a full or closed stdout is an error, not
	// a silent exit 0.
	stdout := bufio.NewWriter(out)
	k := t.Kernel
	fmt.Fprintf(stdout, "kernel   %s\n", k.Release)
	if k.BelowMinimum() {
		fmt.Fprintf(stdout, "minimum  %s: this kernel is older than any tcpwatch is tested on; what attached below works, other verdicts may be missing or wrong\n", tracer.MinKernel)
	} else {
		fmt.Fprintf(stdout, "minimum  %s (the oldest kernel of tcpwatch's matrix): this kernel is supported\n", tracer.MinKernel)
	}
	fmt.Fprintf(stdout, "btf      %s\n", k.BTFSource)
	fmt.Fprintf(stdout, "hz       %d (from %s)\n", k.HZ, k.HZSource)
	fmt.Fprintf(stdout, "timers   tcp_keepalive_timer %s, tcp_write_timer %s (/proc/kallsyms)\n",
		visible(k.KeepaliveTimerVisible), visible(k.WriteTimerVisible))
	fmt.Fprintf(stdout, "         in %s and %s (BTF)\n", field(k.KeepaliveTimerField), field(k.WriteTimerField))
	fmt.Fprintln(stdout, "hooks:")
	missing := 0
	for _, h := range t.Hooks {
		if h.Attached {
			fmt.Fprintf(stdout, "  ok       %-26s %s (%s)\n", h.Name, h.Via, strings.Join(h.Chosen, ", "))
			continue
		}
		missing++
		fmt.Fprintf(stdout, "  MISSING  %-26s %s; lost: %s\n", h.Name, h.Reason, h.Loses)
	}
	for _, d := range t.Degraded() {
		fmt.Fprintf(stdout, "  DEGRADED %s\n", d)
	}
	// A timer whose member is unknown attaches but sees nothing (Degraded says what is lost).
	if missing == 0 && k.KeepaliveTimerField != "" && k.WriteTimerField != "" {
		fmt.Fprintln(stdout, "all hooks attached: every verdict is available")
	}
	// tcpwatch exposure and --exposure-every read a socket iterator.
	if r, err := tracer.OpenSocketReader(false); err != nil {
		fmt.Fprintf(stdout, "exposure MISSING   the TCP socket iterator: %v; lost: tcpwatch exposure and the exposure metrics\n", err)
	} else {
		r.Close()
		fmt.Fprintln(stdout, "exposure ok        iter/tcp socket iterator (tcpwatch exposure, --exposure-every)")
	}
	if err := stdout.Flush(); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

func visible(ok bool) string {
	if ok {
		return "visible"
	}
	return "hidden (its timer path stays silent)"
}

func field(name string) string {
	if name == "" {
		return "an unknown member (its timer path stays silent)"
	}
	return name
}
