package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
)

// tracer is one configuration under test.
type tracer struct {
	name string
	args func(c config) []string // nil: no tracer at all
}

var (
	noTracer    = tracer{name: "none"}
	floorTracer = tracer{name: "floor (empty programs)", args: func(config) []string {
		exe, _ := os.Executable()
		return []string{exe, "floor"}
	}}
	tcpwatchDefault = tracer{name: "tcpwatch", args: func(c config) []string { return []string{c.tcpwatch, "-o", "json"} }}
	tcpwatchAll     = tracer{name: "tcpwatch --all", args: func(c config) []string { return []string{c.tcpwatch, "-o", "json", "--all"} }}
	tcpwatchBase    = tracer{name: "tcpwatch (baseline)", args: func(c config) []string { return []string{c.baseline, "-o", "json"} }}
	tcpwatchBaseAll = tracer{name: "tcpwatch --all (baseline)", args: func(c config) []string { return []string{c.baseline, "-o", "json", "--all"} }}
	bpftracePeer    = tracer{name: "bpftrace", args: func(config) []string { return []string{"bpftrace", "-e", bpftraceScript} }}
)

// running is a tracer process with the BPF programs it loaded.
type running struct {
	name    string
	cmd     *exec.Cmd
	progs   []ebpf.ProgramID
	out     *os.File // its stdout, when kept
	exited  chan error
	stopped bool
	output  string
}

func programIDs() []ebpf.ProgramID {
	var ids []ebpf.ProgramID
	id := ebpf.ProgramID(0)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return ids
		}
		ids = append(ids, next)
		id = next
	}
}

// start runs the tracer and waits until its programs are loaded and have
// stayed the same for a moment (attached, start-up work done).
func (t tracer) start(ctx context.Context, c config, keepOutput bool) (*running, error) {
	if t.args == nil {
		return nil, nil
	}
	before := programIDs()
	argv := t.args(c)
	cmd := exec.Command(argv[0], argv[1:]...)
	r := &running{name: t.name, cmd: cmd, exited: make(chan error, 1)}
	if keepOutput {
		f, err := os.CreateTemp("", "tcpwatch-bench-out-")
		if err != nil {
			return nil, err
		}
		r.out, cmd.Stdout = f, f
	} else {
		// A pipe drained by us: the tracer pays for writing its output, as
		// it would to a terminal or a log shipper.
		pr, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		go drain(pr, io.Discard)
	}
	stderr, _ := cmd.StderrPipe()
	var errText strings.Builder
	go drain(stderr, &errText)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", t.name, err)
	}
	go func() { r.exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	stable := 0
	var last []ebpf.ProgramID
	for stable < 5 {
		select {
		case err := <-r.exited:
			return nil, fmt.Errorf("%s exited at start: %v: %s", t.name, err, errText.String())
		case <-ctx.Done():
			r.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		var mine []ebpf.ProgramID
		for _, id := range programIDs() {
			if !slices.Contains(before, id) {
				mine = append(mine, id)
			}
		}
		if len(mine) > 0 && slices.Equal(mine, last) {
			stable++
		} else {
			stable = 0
		}
		last = mine
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("%s loaded no programs within a minute: %s", t.name, errText.String())
		}
	}
	r.progs = last
	return r, nil
}

// stop ends the tracer with SIGINT (its clean exit) and returns its kept
// output, if any.
func (r *running) stop() string {
	if r == nil {
		return ""
	}
	if r.stopped {
		return r.output
	}
	r.stopped = true
	r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.exited:
	case <-time.After(15 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
	}
	if r.out == nil {
		return ""
	}
	defer os.Remove(r.out.Name())
	r.out.Close()
	b, _ := os.ReadFile(r.out.Name())
	r.output = string(b)
	return r.output
}

// cost is what a tracer spent: per BPF program (run time and runs), and its
// process's CPU time.
type cost struct {
	bpfNs  map[string]uint64
	runs   map[string]uint64
	procNs uint64
}

func (r *running) sample() (cost, error) {
	c := cost{bpfNs: map[string]uint64{}, runs: map[string]uint64{}}
	if r == nil {
		return c, nil
	}
	for _, id := range r.progs {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		if err != nil {
			p.Close()
			continue
		}
		st, err := p.Stats()
		p.Close()
		if err != nil {
			continue
		}
		c.bpfNs[info.Name] += uint64(st.Runtime)
		c.runs[info.Name] += st.RunCount
	}
	ns, err := processCPU(r.cmd.Process.Pid)
	c.procNs = ns
	return c, err
}

// sub is the cost spent between two samples.
func (c cost) sub(before cost) cost {
	d := cost{bpfNs: map[string]uint64{}, runs: map[string]uint64{}, procNs: c.procNs - before.procNs}
	for k, v := range c.bpfNs {
		d.bpfNs[k] = v - before.bpfNs[k]
		d.runs[k] = c.runs[k] - before.runs[k]
	}
	return d
}

// add sums two costs (several rounds' worth).
func (c cost) add(o cost) cost {
	s := cost{bpfNs: map[string]uint64{}, runs: map[string]uint64{}, procNs: c.procNs + o.procNs}
	for _, x := range []cost{c, o} {
		for k, v := range x.bpfNs {
			s.bpfNs[k] += v
			s.runs[k] += x.runs[k]
		}
	}
	return s
}

func (c cost) totalBPF() (ns, runs uint64) {
	for k, v := range c.bpfNs {
		ns += v
		runs += c.runs[k]
	}
	return ns, runs
}

// only sums the programs whose names contain part.
func (c cost) only(part string) (ns, runs uint64) {
	for k, v := range c.bpfNs {
		if strings.Contains(k, part) {
			ns += v
			runs += c.runs[k]
		}
	}
	return ns, runs
}

// processCPU is the CPU time of every thread of pid, in ns (schedstat).
func processCPU(pid int) (uint64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", t.Name(), "schedstat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			v, _ := strconv.ParseUint(f[0], 10, 64)
			sum += v
		}
	}
	return sum, nil
}

// rss is the resident set of pid, in KiB: all of it, and the anonymous
// part (the Go heap and stacks; the rest is the binary and the ring
// buffer's mapping).
type rss struct{ total, anon int }

func rssKiB(pid int) (rss, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rss{}, err
	}
	defer f.Close()
	var r rss
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for key, dst := range map[string]*int{"VmRSS:": &r.total, "RssAnon:": &r.anon} {
			if v, ok := strings.CutPrefix(sc.Text(), key); ok {
				*dst, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			}
		}
	}
	if r.total == 0 {
		return r, errors.New("no VmRSS")
	}
	return r, nil
}

// lastStats finds tcpwatch's closing stats record in its JSON output.
func lastStats(out string) (events, lost uint64, tracked, evictions int, err error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if !strings.Contains(l, `"type":"stats"`) {
			continue
		}
		var s struct {
			Events    uint64 `json:"events"`
			Lost      uint64 `json:"lost"`
			Tracked   int    `json:"tracked"`
			Evictions int    `json:"evictions"`
		}
		if err := jsonUnmarshal(l, &s); err != nil {
			return 0, 0, 0, 0, err
		}
		return s.Events, s.Lost, s.Tracked, s.Evictions, nil
	}
	return 0, 0, 0, 0, errors.New("no stats record in tcpwatch's output")
}
