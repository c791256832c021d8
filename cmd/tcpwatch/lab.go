package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcpwatch/tcpwatch/lab"
	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer"
)

const labUsage = `tcpwatch lab: reproduce a TCP failure in network namespaces and narrate it live

Usage:
  tcpwatch lab list                 the scenarios
  tcpwatch lab run NAME [flags]     build the hosts, run the failure, trace both hosts, clean up
  tcpwatch lab cleanup              remove namespaces left by a killed run

Flags for run:
`

func runLab(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("lab needs a command: list, run or cleanup (tcpwatch lab --help)")}
	}
	if args[0] == "--help" || args[0] == "-h" || args[0] == "help" {
		fmt.Fprint(stdout, labUsage)
		return nil
	}
	if (args[0] == "list" || args[0] == "cleanup") && len(args) > 1 {
		return usageError{fmt.Errorf("lab %s takes no arguments", args[0])}
	}
	switch args[0] {
	case "list":
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tROW\tWHAT HAPPENS")
		for _, sc := range lab.Scenarios {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", sc.Name, sc.Row, sc.Summary)
		}
		return tw.Flush()
	case "cleanup":
		if os.Geteuid() != 0 {
			return lab.ErrNotRoot
		}
		removed, err := lab.Cleanup()
		for _, r := range removed {
			fmt.Fprintf(stdout, "removed %s\n", r)
		}
		return err
	case "run":
		return runLabScenario(args[1:], stdout, stderr)
	case "agent":
		// A lab application, started by a lab run (hidden: not for people).
		if code := lab.AgentMain(args[1:]); code != 0 {
			os.Exit(code)
		}
		return nil
	}
	return usageError{fmt.Errorf("unknown lab command %q (list, run or cleanup)", args[0])}
}

func runLabScenario(args []string, stdout, stderr io.Writer) error {
	var opt lab.Options
	var format, timeout string
	var explain bool
	var record string
	fs := pflag.NewFlagSet("tcpwatch lab run", pflag.ContinueOnError)
	fs.SetOutput(stdout) // only --help writes there
	fs.Usage = func() {
		fmt.Fprint(stdout, labUsage)
		fs.PrintDefaults()
	}
	fs.BoolVar(&opt.KernelDefaults, "kernel-defaults", false, "keep the kernel's own timers (tcp_retries2=15: 924.6s) instead of shortening them")
	fs.IntVar(&opt.Retries2, "retries2", 3, "tcp_retries2 inside the lab's hosts")
	fs.IntVar(&opt.SynRetries, "syn-retries", 1, "tcp_syn_retries inside the lab's hosts")
	fs.DurationVar(&opt.KeepaliveTime, "keepalive-time", 2*time.Second, "keepalive idle time (whole seconds)")
	fs.DurationVar(&opt.KeepaliveIntvl, "keepalive-intvl", time.Second, "keepalive probe interval (whole seconds)")
	fs.IntVar(&opt.KeepaliveProbe, "keepalive-probes", 3, "keepalive probes before giving up")
	fs.DurationVar(&opt.ReplugAfter, "replug-after", 2*time.Second, "outage length of cable-replug")
	fs.StringVar(&timeout, "timeout", "", "give up waiting for the verdicts after this long (default 20s, 3h with --kernel-defaults)")
	fs.StringVarP(&format, "output", "o", "text", "text or json (JSON lines)")
	fs.BoolVar(&explain, "explain", false, "text output: add each narrative's explanation")
	fs.StringVar(&record, "record", "", "write the kernel events to this file (test data for the tracker)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("lab run takes one scenario name (tcpwatch lab list)")}
	}
	f, err := output.ParseFormat(format)
	if err != nil {
		return usageError{err}
	}
	if timeout != "" {
		if opt.Timeout, err = time.ParseDuration(timeout); err != nil || opt.Timeout <= 0 {
			return usageError{fmt.Errorf("--timeout %q is not a positive duration", timeout)}
		}
	}
	if opt.KeepaliveTime%time.Second != 0 || opt.KeepaliveIntvl%time.Second != 0 || opt.KeepaliveTime <= 0 || opt.KeepaliveIntvl <= 0 {
		return usageError{errors.New("keepalive times must be whole, positive seconds")}
	}
	if opt.Retries2 < 1 || opt.Retries2 > 255 || opt.SynRetries < 1 || opt.SynRetries > 127 || opt.KeepaliveProbe < 1 || opt.KeepaliveProbe > 127 {
		return usageError{errors.New("--retries2, --syn-retries and --keepalive-probes must be between 1 and 127 (255 for retries2)")}
	}
	if lab.Find(fs.Arg(0)) == nil {
		return usageError{fmt.Errorf("no scenario %q (tcpwatch lab list shows them)", fs.Arg(0))}
	}
	if err := tracer.CheckPrivileges(); err != nil {
		return err
	}
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	w := output.NewWriter(stdout, f, output.Options{Color: isTerminal(stdout), Explain: explain})
	if record != "" {
		f, err := os.Create(record)
		if err != nil {
			return fmt.Errorf("--record: %w", err)
		}
		defer f.Close()
		opt.Record = f
	}
	res, err := lab.Run(ctx, fs.Arg(0), opt, lab.Printer(w))
	if err != nil {
		return err
	}
	if !res.OK {
		return fmt.Errorf("scenario %s did not end as expected: %v", res.Scenario, res.Missing)
	}
	return nil
}
