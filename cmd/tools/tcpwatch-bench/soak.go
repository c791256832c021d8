package main

// The soak: tcpwatch --all watching loopback churn at a steady rate for a
// long time (10 minutes by default), its resident memory sampled every 10 s.
// A tracer that leaks a few bytes per connection shows it here and nowhere
// else. `make soak` runs it and writes docs/soak.md.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
)

type soakConfig struct {
	tcpwatch string
	out      string
	duration time.Duration
	every    time.Duration
	rate     int
	workers  int
}

type soakSample struct {
	at        time.Duration
	rss, anon int // KiB
	conns     int64
}

func runSoak(args []string) error {
	var c soakConfig
	fs := pflag.NewFlagSet("tcpwatch-bench soak", pflag.ContinueOnError)
	fs.StringVar(&c.tcpwatch, "tcpwatch", "./tcpwatch", "the tcpwatch binary to soak")
	fs.StringVar(&c.out, "out", "docs/soak.md", "where to write the report")
	fs.DurationVar(&c.duration, "duration", 10*time.Minute, "how long the churn lasts")
	fs.DurationVar(&c.every, "every", 10*time.Second, "how often tcpwatch's RSS is sampled")
	fs.IntVar(&c.rate, "rate", 1000, "connections per second, held steady")
	fs.IntVar(&c.workers, "workers", 16, "concurrent clients")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root (tcpwatch loads BPF programs)")
	}
	if c.duration < 2*time.Minute+c.every {
		return errors.New("--duration must be longer than two minutes: the verdict compares the second minute with the last")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	raiseNofile(1 << 16)

	cmd := exec.Command(c.tcpwatch, "-o", "json", "--all")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	// Narratives are drained as a log shipper would; only the lines are
	// counted and the closing stats record kept.
	var lines atomic.Int64
	statsLine := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<16), 1<<22)
		last := ""
		for sc.Scan() {
			lines.Add(1)
			if strings.Contains(sc.Text(), `"type":"stats"`) {
				last = sc.Text()
			}
		}
		io.Copy(io.Discard, stdout)
		statsLine <- last
	}()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", c.tcpwatch, err)
	}
	defer cmd.Process.Kill()
	time.Sleep(2 * time.Second) // attached, existing connections read
	idle, err := rssKiB(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("tcpwatch did not start: %v: %s", err, stderr.String())
	}
	fmt.Fprintf(os.Stderr, "soak: tcpwatch pid %d idle RSS %d KiB; churning %d/s for %s\n", cmd.Process.Pid, idle.total, c.rate, c.duration)

	churnCtx, stopChurn := context.WithTimeout(ctx, c.duration)
	defer stopChurn()
	var done, failed atomic.Int64
	churnErr := make(chan error, 1)
	go func() { churnErr <- steadyChurn(churnCtx, c.rate, c.workers, &done, &failed) }()

	start := time.Now()
	var samples []soakSample
	tick := time.NewTicker(c.every)
	defer tick.Stop()
sampling:
	for {
		select {
		case <-churnCtx.Done():
			break sampling
		case <-tick.C:
			r, err := rssKiB(cmd.Process.Pid)
			if err != nil {
				return fmt.Errorf("tcpwatch died during the soak: %v: %s", err, stderr.String())
			}
			s := soakSample{at: time.Since(start), rss: r.total, anon: r.anon, conns: done.Load()}
			samples = append(samples, s)
			fmt.Fprintf(os.Stderr, "soak: %6.0fs rss %6d KiB anon %6d KiB connections %d\n", s.at.Seconds(), s.rss, s.anon, s.conns)
		}
	}
	if err := <-churnErr; err != nil {
		return fmt.Errorf("churn: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	elapsed := time.Since(start)
	// After the churn: what tcpwatch keeps once the traffic has stopped.
	time.Sleep(c.every)
	after, _ := rssKiB(cmd.Process.Pid)
	cmd.Process.Signal(syscall.SIGINT)
	werr := cmd.Wait()
	stats := <-statsLine
	if werr != nil {
		return fmt.Errorf("tcpwatch: %v: %s", werr, stderr.String())
	}
	res := soakResult{c: c, idle: idle, after: after, samples: samples, conns: done.Load(), failed: failed.Load(),
		elapsed: elapsed, lines: lines.Load(), stats: stats, stderr: stderr.String()}
	return res.write(c.out)
}

// steadyChurn makes rate loopback connections per second (connect, one
// byte each way, the server closes first) until ctx ends.
func steadyChurn(ctx context.Context, rate, workers int, done, failed *atomic.Int64) error {
	ln, err := testkit.EchoOneByteServer()
	if err != nil {
		return err
	}
	defer ln.Close()
	tokens := make(chan struct{}, rate)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			for range tokens {
				c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				c.Write(b)
				io.ReadFull(c, b)
				io.Copy(io.Discard, c)
				c.Close()
				done.Add(1)
			}
		}()
	}
	// Tokens every 10 ms keep the rate steady within a second.
	const slot = 10 * time.Millisecond
	per := float64(rate) * slot.Seconds()
	tick := time.NewTicker(slot)
	owed := 0.0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			owed += per
			for ; owed >= 1; owed-- {
				select {
				case tokens <- struct{}{}:
				default: // the clients fall behind: do not pile up
				}
			}
		}
	}
	tick.Stop()
	close(tokens)
	wg.Wait()
	return nil
}

type soakResult struct {
	c             soakConfig
	idle, after   rss
	samples       []soakSample
	conns, failed int64
	elapsed       time.Duration
	lines         int64
	stats, stderr string
}

// window is the median RSS of the samples taken in [from, to).
func (r *soakResult) window(from, to time.Duration) (float64, int) {
	var xs []float64
	for _, s := range r.samples {
		if s.at >= from && s.at < to {
			xs = append(xs, float64(s.rss))
		}
	}
	return median(xs), len(xs)
}

// verdict compares the last minute's median RSS with the second minute's
// (the first minute is warm-up: the tracker, maps and the Go heap grow to
// the churn's working set).
func (r *soakResult) verdict() (string, float64, float64) {
	second, _ := r.window(time.Minute, 2*time.Minute)
	end := r.samples[len(r.samples)-1].at + time.Nanosecond
	last, _ := r.window(end-time.Minute, end)
	if second == 0 {
		return "not flat (no samples in the second minute)", second, last
	}
	if d := (last - second) / second; d <= 0.10 && d >= -0.10 {
		return "flat", second, last
	}
	return "not flat", second, last
}

func (r *soakResult) write(path string) error {
	verdict, second, last := r.verdict()
	var b strings.Builder
	fmt.Fprintf(&b, "# Soak: tcpwatch --all under steady churn\n\n")
	fmt.Fprintf(&b, "Written by `make soak` (`tcpwatch-bench soak`) on %s, kernel %s, %d CPUs (%s), %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), kernelRelease(), runtime.NumCPU(), cpuModel(), runtime.Version())
	fmt.Fprintf(&b, "`tcpwatch -o json --all` (default 4 MiB ring) watched loopback churn for %s: %d clients\n", r.elapsed.Round(time.Second), r.c.workers)
	fmt.Fprintf(&b, "connect, send one byte, read the answer and close, paced at %d connections per second;\n", r.c.rate)
	fmt.Fprintf(&b, "each connection is two tracked sockets and two `local_closed` narratives. tcpwatch's\n")
	fmt.Fprintf(&b, "output was read and discarded. Its resident memory (VmRSS, and RssAnon: the Go heap and\n")
	fmt.Fprintf(&b, "stacks) was sampled every %s.\n\n", r.c.every)
	fmt.Fprintf(&b, "**Verdict: %s.** Median RSS in the second minute %.1f MiB, in the last minute %.1f MiB (%+.1f%%; flat means within ±10%%).\n\n",
		verdict, second/1024, last/1024, 100*(last-second)/max(second, 1))
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| connections made | %d (%.0f/s), %d failed |\n", r.conns, float64(r.conns)/r.elapsed.Seconds(), r.failed)
	fmt.Fprintf(&b, "| lines tcpwatch wrote | %d |\n", r.lines)
	fmt.Fprintf(&b, "| RSS idle, before the churn | %.1f MiB (anon %.1f MiB) |\n", mib(r.idle.total), mib(r.idle.anon))
	fmt.Fprintf(&b, "| RSS %s after the churn stopped | %.1f MiB (anon %.1f MiB) |\n", r.c.every, mib(r.after.total), mib(r.after.anon))
	if r.stats != "" {
		fmt.Fprintf(&b, "| closing stats record | `%s` |\n", strings.ReplaceAll(r.stats, "|", "\\|"))
	}
	if w := strings.TrimSpace(r.stderr); w != "" {
		fmt.Fprintf(&b, "| tcpwatch's stderr | `%s` |\n", strings.ReplaceAll(strings.ReplaceAll(w, "\n", " / "), "|", "\\|"))
	}
	fmt.Fprintf(&b, "\n## RSS every %s\n\n| time | RSS MiB | anon MiB | connections so far |\n|---:|---:|---:|---:|\n", r.c.every)
	for _, s := range r.samples {
		fmt.Fprintf(&b, "| %.0fs | %.1f | %.1f | %d |\n", s.at.Seconds(), mib(s.rss), mib(s.anon), s.conns)
	}
	sorted := make([]float64, 0, len(r.samples))
	for _, s := range r.samples {
		sorted = append(sorted, float64(s.rss))
	}
	sort.Float64s(sorted)
	if len(sorted) > 0 {
		fmt.Fprintf(&b, "\nRange over the run: %.1f–%.1f MiB.\n", sorted[0]/1024, sorted[len(sorted)-1]/1024)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "soak: %s (second minute %.1f MiB, last minute %.1f MiB); wrote %s\n", verdict, second/1024, last/1024, path)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
