package main

import (
	"fmt"
	"io"

	"github.com/tcpwatch/tcpwatch/tracer"
)

// runCheck loads and attaches everything, reports what this kernel gives
// tcpwatch, then detaches.
func runCheck(o *options, stdout io.Writer) error {
	t, err := tracer.New(tracer.Config{KernelBTF: o.kernelBTF, RingSize: o.ringSize})
	if err != nil {
		return err
	}
	defer t.Close()
	k := t.Kernel
	fmt.Fprintf(stdout, "kernel   %s\n", k.Release)
	fmt.Fprintf(stdout, "btf      %s\n", k.BTFSource)
	fmt.Fprintf(stdout, "hz       %d (from %s)\n", k.HZ, k.HZSource)
	if k.KeepaliveTimer != 0 {
		fmt.Fprintf(stdout, "keepalive timer  tcp_keepalive_timer at %#x (/proc/kallsyms)\n", k.KeepaliveTimer)
	}
	fmt.Fprintln(stdout, "hooks:")
	missing := 0
	for _, h := range t.Hooks {
		if h.Attached {
			fmt.Fprintf(stdout, "  ok       %-26s %s (%s)\n", h.Name, h.Via, h.Program)
			continue
		}
		missing++
		fmt.Fprintf(stdout, "  MISSING  %-26s %s; lost: %s\n", h.Name, h.Reason, h.Loses)
	}
	if missing == 0 {
		fmt.Fprintln(stdout, "all hooks attached: every verdict is available")
	}
	return nil
}
