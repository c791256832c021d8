package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/lab/netlab"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// churnOnce makes n loopback connections (connect, one request, close) as
// fast as workers allow. The server closes first, so the TIME_WAITs stay on
// its side and the clients never run out of ports.
func churnOnce(n, workers int) (time.Duration, error) {
	ln, err := testkit.EchoOneByteServer()
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			for left.Add(-1) >= 0 {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				c.Write(b)
				io.ReadFull(c, b)
				io.Copy(io.Discard, c)
				c.Close()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, ok := firstErr.Load().(error); ok {
		return elapsed, err
	}
	return elapsed, nil
}

func benchChurn(ctx context.Context, c config, rep *report) error {
	// Warm up the kernel's and Go's caches once.
	if _, err := churnOnce(2000, 4); err != nil {
		return err
	}
	tracers, err := churnTracers(c)
	if err != nil {
		return err
	}
	if err := ensureTracefs(); err != nil {
		return err
	}
	res := map[string]*churnResult{}
	for round := 0; round < c.rounds; round++ {
		for _, t := range tracers {
			fmt.Fprintf(os.Stderr, "churn round %d: %s\n", round+1, t.name)
			r, err := t.start(ctx, c, false)
			if err != nil {
				return err
			}
			before, _ := r.sample()
			elapsed, err := churnOnce(c.conns, 4)
			after, _ := r.sample()
			r.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			d := after.sub(before)
			bpfNs, runs := d.totalBPF()
			cr := res[t.name]
			if cr == nil {
				cr = &churnResult{name: t.name}
				res[t.name] = cr
			}
			n := float64(c.conns)
			cr.rate = append(cr.rate, n/elapsed.Seconds())
			cr.bpf = append(cr.bpf, float64(bpfNs)/n)
			cr.user = append(cr.user, float64(d.procNs)/n)
			cr.total = append(cr.total, float64(bpfNs+d.procNs)/n)
			cr.runs = append(cr.runs, float64(runs)/n)
			cr.perProg = cr.perProg.add(d)
			if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
				return err
			}
		}
	}
	for _, t := range tracers {
		rep.churn = append(rep.churn, res[t.name])
	}
	rep.churnBase = res[tcpwatchBase.name]
	return nil
}

// churnTracerNames are the churn workload's configurations by the names
// --churn-tracers takes.
var churnTracerNames = map[string]tracer{"none": noTracer, "floor": floorTracer, "tcpwatch": tcpwatchDefault,
	"all": tcpwatchAll, "bpftrace": bpftracePeer, "baseline": tcpwatchBase, "baseline-all": tcpwatchBaseAll}

// churnTracers is what --churn-tracers picks, in its order.
func churnTracers(c config) ([]tracer, error) {
	names := c.churnTracers
	if len(names) == 0 {
		names = []string{"none", "floor", "tcpwatch", "all", "bpftrace"}
		if c.baseline != "" {
			names = append(names, "baseline")
		}
	}
	var ts []tracer
	for _, n := range names {
		t, ok := churnTracerNames[n]
		if !ok {
			return nil, fmt.Errorf("--churn-tracers: unknown configuration %q", n)
		}
		if strings.HasPrefix(n, "baseline") && c.baseline == "" {
			return nil, fmt.Errorf("--churn-tracers %s needs --baseline", n)
		}
		ts = append(ts, t)
	}
	return ts, nil
}

type churnResult struct {
	name                         string
	rate, bpf, user, total, runs []float64
	perProg                      cost // every round's, per program
}

// bulkPair builds two hosts joined by a lossy cable and starts a sender in A
// and a receiver in B.
func benchBulk(ctx context.Context, c config, rep *report) error {
	tracers := []tracer{noTracer, floorTracer, tcpwatchDefault, tcpwatchAll}
	for round := 0; round < c.rounds; round++ {
		for _, t := range tracers {
			fmt.Fprintf(os.Stderr, "bulk round %d: %s\n", round+1, t.name)
			r, err := t.start(ctx, c, strings.HasPrefix(t.name, "tcpwatch"))
			if err != nil {
				return err
			}
			before, _ := r.sample()
			bytes, elapsed, err := bulkOnce(5 * time.Second)
			after, _ := r.sample()
			out := r.stop()
			if err != nil {
				return err
			}
			d := after.sub(before)
			bpfNs, runs := d.totalBPF()
			br := rep.bulkFor(t.name)
			br.mbps = append(br.mbps, float64(bytes)*8/elapsed.Seconds()/1e6)
			br.cpuPct = append(br.cpuPct, float64(bpfNs+d.procNs)/float64(elapsed.Nanoseconds())*100)
			br.runsPerS = append(br.runsPerS, float64(runs)/elapsed.Seconds())
			if out != "" {
				events, lost, _, _, err := lastStats(out)
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				br.eventsPerS = append(br.eventsPerS, float64(events)/elapsed.Seconds())
				br.lost = append(br.lost, float64(lost))
			}
		}
	}
	return nil
}

// bulkOnce sends as fast as it can from A to B over a cable that drops 2%
// of packets, for d, and returns the bytes received.
func bulkOnce(d time.Duration) (int64, time.Duration, error) {
	l, err := netlab.New()
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	a, err := l.AddHost("a")
	if err != nil {
		return 0, 0, err
	}
	b, err := l.AddHost("b")
	if err != nil {
		return 0, 0, err
	}
	cable, err := l.Cable(a, b, netlab.CableOptions{})
	if err != nil {
		return 0, 0, err
	}
	if _, err := cable.Lossy(2); err != nil {
		return 0, 0, err
	}
	addr := netip.AddrPortFrom(b.Addr4(), 9000).String()
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		return 0, 0, err
	}
	defer ln.Close()
	var received atomic.Int64
	go testkit.AcceptAll(ln, func(c net.Conn) {
		go func() {
			n, _ := io.Copy(io.Discard, c)
			received.Add(n)
			c.Close()
		}()
	})
	var conns []net.Conn
	for i := 0; i < 4; i++ {
		var c net.Conn
		if err := a.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
			return 0, 0, err
		}
		conns = append(conns, c)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for time.Since(start) < d {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
			c.Close()
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(start)
	time.Sleep(500 * time.Millisecond)
	return received.Load(), elapsed, nil
}

type bulkResult struct {
	name                                     string
	mbps, cpuPct, runsPerS, eventsPerS, lost []float64
}

// benchTimers holds many idle loopback connections whose keepalive timer
// fires every second: the timer hook runs for every kernel timer expiry on
// the machine, so this is where its filter shows.
func benchTimers(ctx context.Context, c config, rep *report) error {
	const n = 2000
	raiseNofile(4*n + 1000)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	var server []net.Conn
	var mu sync.Mutex
	go testkit.AcceptAll(ln, func(c net.Conn) {
		mu.Lock()
		server = append(server, c)
		mu.Unlock()
	})
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
		mu.Lock()
		for _, c := range server {
			c.Close()
		}
		mu.Unlock()
	}()
	d := net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 9}}
	for i := 0; i < n; i++ {
		cc, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		clients = append(clients, cc)
	}
	for round := 0; round < c.rounds; round++ {
		for _, t := range []tracer{floorTracer, tcpwatchDefault} {
			fmt.Fprintf(os.Stderr, "timers round %d: %s\n", round+1, t.name)
			r, err := t.start(ctx, c, false)
			if err != nil {
				return err
			}
			before, _ := r.sample()
			if err := sleepCtx(ctx, 5*time.Second); err != nil {
				r.stop()
				return err
			}
			after, _ := r.sample()
			r.stop()
			d := after.sub(before)
			tr := rep.timerFor(t.name)
			ns, runs := d.only("timer")
			all, _ := d.totalBPF()
			tr.expiriesPerS = append(tr.expiriesPerS, float64(runs)/2/5)
			tr.nsPerExpiry = append(tr.nsPerExpiry, float64(ns)/(float64(runs)/2))
			tr.cpuPct = append(tr.cpuPct, float64(all+d.procNs)/5e9*100)
		}
	}
	return nil
}

type timerResult struct {
	name                              string
	expiriesPerS, nsPerExpiry, cpuPct []float64
}

func raiseNofile(n uint64) {
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	if rl.Cur < n {
		rl.Cur = n
		if rl.Max < n {
			rl.Max = n
		}
		unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	}
}

// benchMemory measures tcpwatch --all's resident memory at idle, with
// c.memConns concurrent loopback connections (both ends tracked), and after
// they close. The connections are held by helper processes: a process may
// not open more than RLIMIT_NOFILE descriptors, and root cannot raise that
// here.
func benchMemory(ctx context.Context, c config, rep *report) error {
	r, err := tcpwatchAll.start(ctx, c, true)
	if err != nil {
		return err
	}
	defer r.stop()
	pid := r.cmd.Process.Pid
	if err := sleepCtx(ctx, time.Second); err != nil {
		return err
	}
	idle, err := rssKiB(pid)
	if err != nil {
		return err
	}
	const perHolder = 4000
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var holders []*exec.Cmd
	defer func() {
		for _, h := range holders {
			h.Process.Kill()
			h.Wait()
		}
	}()
	start := time.Now()
	for left := c.memConns; left > 0; left -= perHolder {
		n := min(left, perHolder)
		h := exec.Command(exe, "hold", fmt.Sprint(n))
		out, err := h.StdoutPipe()
		if err != nil {
			return err
		}
		h.Stderr = os.Stderr
		if err := h.Start(); err != nil {
			return err
		}
		holders = append(holders, h)
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "ready") {
			return fmt.Errorf("holder failed: %q %v", line, err)
		}
	}
	opened := time.Since(start)
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return err
	}
	peak, err := rssKiB(pid)
	if err != nil {
		return err
	}
	for _, h := range holders { // one at a time: a steady rate of closes
		h.Process.Signal(syscall.SIGTERM)
		h.Wait()
	}
	holders = nil
	if err := sleepCtx(ctx, 5*time.Second); err != nil {
		return err
	}
	after, err := rssKiB(pid) // after the holders closed everything and exited
	if err != nil {
		return err
	}
	out := r.stop()
	events, lost, _, evictions, err := lastStats(out)
	if err != nil {
		return err
	}
	rep.memory = &memoryResult{conns: c.memConns, idleKiB: idle, peakKiB: peak, afterKiB: after,
		events: events, lost: lost, evictions: evictions, opened: opened}
	return nil
}

// runHold opens n loopback connections, says "ready", and closes them all
// when told to stop (SIGTERM): the memory workload's helper.
func runHold(arg string) error {
	var n int
	if _, err := fmt.Sscan(arg, &n); err != nil {
		return err
	}
	raiseNofile(uint64(2*n + 100))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	accepted := make(chan net.Conn, n)
	go testkit.AcceptAll(ln, func(c net.Conn) {
		accepted <- c
	})
	conns := make([]net.Conn, 0, 2*n)
	for i := 0; i < n; i++ {
		if i%10 == 0 {
			// About 5,000 connections a second: a steady arrival rate, not
			// a burst that would measure the ring buffer instead.
			time.Sleep(2 * time.Millisecond)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c, <-accepted)
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	for i, c := range conns {
		if i%20 == 0 {
			time.Sleep(2 * time.Millisecond) // the same steady rate as the opening
		}
		c.Close()
	}
	return nil
}

type memoryResult struct {
	conns                      int
	idleKiB, peakKiB, afterKiB rss
	events, lost               uint64
	evictions                  int
	opened                     time.Duration
}

// benchStartup times exec -> programs loaded and exec -> first event.
func benchStartup(ctx context.Context, c config, rep *report) error {
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a trickle of loopback connections for the first event
		for {
			select {
			case <-stop:
				return
			default:
			}
			if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
				if cc, err := net.Dial("tcp", ln.Addr().String()); err == nil {
					cc.Close()
				}
				ln.Close()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	for round := 0; round < c.rounds; round++ {
		before := programIDs()
		cmd := exec.Command(c.tcpwatch, "--events", "-o", "json")
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return err
		}
		loaded := make(chan time.Duration, 1)
		go func() {
			for time.Since(t0) < 10*time.Second {
				for _, id := range programIDs() {
					if !contains(before, id) {
						loaded <- time.Since(t0)
						return
					}
				}
				time.Sleep(time.Millisecond)
			}
			loaded <- -1
		}()
		line, err := bufio.NewReader(out).ReadString('\n')
		first := time.Since(t0)
		cmd.Process.Signal(syscall.SIGINT)
		go drain(out, io.Discard)
		cmd.Wait()
		if err != nil || !strings.Contains(line, `"type":"event"`) {
			return fmt.Errorf("no first event: %v %q", err, line)
		}
		l := <-loaded
		if l < 0 {
			return errors.New("programs never appeared")
		}
		rep.startLoaded = append(rep.startLoaded, float64(l.Microseconds())/1000)
		rep.startFirst = append(rep.startFirst, float64(first.Microseconds())/1000)
		if err := sleepCtx(ctx, 300*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func contains[T comparable](xs []T, x T) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// benchDecode runs the Go benchmarks of the user-space stages: decode,
// track, render.
func benchDecode(ctx context.Context, c config, rep *report) error {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "Decode|Track|ChurnAll|NarrativeJSON|NarrativeEncodingJSON|ReplayAll", "-benchmem", "-count", "3",
		"./tracer/wire/", "./tracer/tracker/", "./output/", "./tracer/engine/")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go test -bench: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "Benchmark") {
			rep.decode = append(rep.decode, line)
		}
	}
	return nil
}

// busyOnce runs a busy server on loopback: conns persistent connections,
// each a client sending a one-byte request and waiting for the one-byte
// response, requests in all, as fast as they go. No connection opens or
// closes while it is timed, so only the per-message path runs: the
// tracepoints tcpwatch uses should stay quiet. It returns the time taken
// and the CPU this process (clients, server, and the kernel work done in
// their syscalls and softirqs) spent.
func busyOnce(conns, requests int) (elapsed time.Duration, cpuNs uint64, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer ln.Close()
	go testkit.AcceptAll(ln, func(c net.Conn) {
		go func(c net.Conn) { // echo one byte at a time until the client closes
			defer c.Close()
			b := make([]byte, 1)
			for {
				if _, err := c.Read(b); err != nil {
					return
				}
				if _, err := c.Write(b); err != nil {
					return
				}
			}
		}(c)
	})
	clients := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return 0, 0, err
		}
		clients = append(clients, c)
	}
	// Every connection warmed up (accepted, one exchange) before the clock starts.
	for _, c := range clients {
		if err := exchange(c); err != nil {
			return 0, 0, err
		}
	}
	per := requests / conns
	var firstErr atomic.Value
	var wg sync.WaitGroup
	cpu0 := selfCPU()
	start := time.Now()
	for _, c := range clients {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if err := exchange(c); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}(c)
	}
	wg.Wait()
	elapsed = time.Since(start)
	cpuNs = selfCPU() - cpu0
	if err, ok := firstErr.Load().(error); ok {
		return elapsed, cpuNs, err
	}
	return elapsed, cpuNs, nil
}

func exchange(c net.Conn) error {
	var b [1]byte
	if _, err := c.Write(b[:]); err != nil {
		return err
	}
	_, err := io.ReadFull(c, b[:])
	return err
}

// selfCPU is this process's user + system CPU time, in ns.
func selfCPU() uint64 {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return uint64(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchBusy is the busy server: persistent connections and one-byte
// requests, the load where a hook on the send/receive path would cost most.
// Per request it reports the tracer's CPU (its BPF programs' run time and
// its process), and the whole CPU (the workload's own, kernel included,
// plus the tracer's), beside no tracer and the floor.
func benchBusy(ctx context.Context, c config, rep *report) error {
	if _, _, err := busyOnce(c.busyConns, c.busyRequests/10); err != nil { // warm-up
		return err
	}
	tracers := []tracer{noTracer, floorTracer, tcpwatchDefault, tcpwatchAll}
	for round := 0; round < c.rounds; round++ {
		for _, t := range tracers {
			fmt.Fprintf(os.Stderr, "busy round %d: %s\n", round+1, t.name)
			r, err := t.start(ctx, c, false)
			if err != nil {
				return err
			}
			before, _ := r.sample()
			elapsed, workNs, err := busyOnce(c.busyConns, c.busyRequests)
			after, _ := r.sample()
			// The same tracer, idle for as long: what the machine's other
			// activity (connections of other users, timers) cost it.
			if err == nil {
				err = sleepCtx(ctx, elapsed)
			}
			idle, _ := r.sample()
			r.stop()
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			d, bg := after.sub(before), idle.sub(after)
			bpfNs, runs := d.totalBPF()
			bgBPF, bgRuns := bg.totalBPF()
			n := float64(c.busyRequests)
			br := rep.busyFor(t.name)
			br.rate = append(br.rate, n/elapsed.Seconds())
			br.runs = append(br.runs, float64(runs)/n)
			br.bgRuns = append(br.bgRuns, float64(bgRuns)/n)
			br.bpf = append(br.bpf, float64(bpfNs)/n)
			br.user = append(br.user, float64(d.procNs)/n)
			br.tracer = append(br.tracer, float64(bpfNs+d.procNs)/n)
			br.background = append(br.background, float64(bgBPF+bg.procNs)/n)
			br.net = append(br.net, max(0, float64(bpfNs+d.procNs)-float64(bgBPF+bg.procNs))/n)
			br.whole = append(br.whole, float64(workNs+d.procNs)/n)
			br.perProg = br.perProg.add(d)
			if err := sleepCtx(ctx, 300*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

type busyResult struct {
	name                                 string
	rate, runs, bpf, user, tracer, whole []float64
	// background: the same tracer's cost over an idle interval as long as
	// the round, per request; net: the round's cost less it.
	bgRuns, background, net []float64
	perProg                 cost // every round's, per program
}
