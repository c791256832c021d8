package tracer

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/bpf"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Config says what the kernel half sends and how much room it has.
type Config struct {
	// All sends every event. Without it the kernel keeps uneventful
	// lifecycles to itself and sends only what can become a narrative.
	All bool
	// RingSize is the ring buffer's size in bytes (a power of two, a
	// multiple of the page size); 0 means 4 MiB.
	RingSize int
	// Kernel-side filters; zero values match everything.
	FilterNetNS uint32
	FilterPort  uint16
	FilterPID   uint32
	// KernelBTF overrides /sys/kernel/btf/vmlinux.
	KernelBTF string
}

// Hook is one kernel code path tcpwatch watches, and how.
type Hook struct {
	Name        string   // the kernel function or event, as people know it
	Tracepoints []string // what it is attached to
	Programs    []string // BPF programs, in order of preference
	Params      []int    // the tracepoint's argument count each program needs
	Loses       string   // what tcpwatch cannot tell without it
	Required    bool     // nothing works without it

	Attached bool
	Via      string // how it is attached, e.g. "tp_btf sock:inet_sock_set_state"
	Program  string // the program that was chosen
	Reason   string // why not, when not attached
}

// hooks lists every path. The first usable program of a hook wins; the
// others are removed before load so the kernel never sees a program it
// cannot take.
func hooks() []*Hook {
	return []*Hook{
		{Name: "tcp_set_state", Tracepoints: []string{"sock:inet_sock_set_state"},
			Programs: []string{"tw_set_state"}, Params: []int{3}, Required: true,
			Loses: "every verdict"},
		{Name: "tcp_retransmit_skb", Tracepoints: []string{"tcp:tcp_retransmit_skb"},
			Programs: []string{"tw_retransmit_err", "tw_retransmit"}, Params: []int{3, 2},
			Loses: "stalled, recovered and the retransmission figures of retransmit_timeout, host_unreachable, connect_timeout"},
		{Name: "tcp_send_active_reset", Tracepoints: []string{"tcp:tcp_send_reset"},
			Programs: []string{"tw_send_reset_reason", "tw_send_reset"}, Params: []int{3, 2},
			Loses: "local_abort and the resets behind keepalive_timeout"},
		{Name: "tcp_keepalive_timer", Tracepoints: []string{"timer:timer_expire_entry", "timer:timer_expire_exit"},
			Programs: []string{"tw_timer_entry", "tw_timer_exit"}, Params: []int{2, 1},
			Loses: "keepalive_probing and the probe count of keepalive_timeout"},
		{Name: "tcp_receive_reset", Tracepoints: []string{"tcp:tcp_receive_reset"},
			Programs: []string{"tw_receive_reset"}, Params: []int{1},
			Loses: "peer_reset, peer_lost_state and connect_refused"},
		{Name: "inet_sk_error_report", Tracepoints: []string{"sock:inet_sk_error_report"},
			Programs: []string{"tw_error_report"}, Params: []int{1},
			Loses: "the error report event (errors are still read from the socket when it closes)"},
		{Name: "tcp_cong_state_set", Tracepoints: []string{"tcp:tcp_cong_state_set"},
			Programs: []string{"tw_cong_state"}, Params: []int{2},
			Loses: "recovered (the end of an outage is seen only when the connection closes)"},
		{Name: "tcp_destroy_sock", Tracepoints: []string{"tcp:tcp_destroy_sock"},
			Programs: []string{"tw_destroy_sock"}, Params: []int{1},
			Loses: "prompt cleanup of the kernel's per-socket table (the LRU still bounds it)"},
	}
}

// Tracer is the loaded, attached kernel half and the ring buffer it feeds.
type Tracer struct {
	Kernel *KernelInfo
	Hooks  []*Hook

	coll     *ebpf.Collection
	links    []link.Link
	reader   *ringbuf.Reader
	record   ringbuf.Record
	clock    wire.Clock
	lazy     bool      // records are written without waking the reader
	deadline time.Time // the caller's, for Read
}

// ErrNotPermitted means the caller lacks the privileges to load BPF.
var ErrNotPermitted = errors.New("not permitted to load BPF programs: run tcpwatch as root (it needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)")

// CheckPrivileges fails early and plainly instead of with a verifier EPERM.
func CheckPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) || (has(unix.CAP_BPF) && has(unix.CAP_PERFMON)) {
		return nil
	}
	return ErrNotPermitted
}

// New loads the programs the kernel can take, attaches them and opens the
// ring buffer. Hooks the kernel lacks are reported in Hooks, not as errors;
// a required hook missing, a verifier rejection or missing privileges are.
func New(cfg Config) (*Tracer, error) {
	if cfg.RingSize == 0 {
		cfg.RingSize = 4 << 20
	}
	if err := CheckPrivileges(); err != nil {
		return nil, err
	}
	ki, err := ProbeKernel(cfg.KernelBTF)
	if err != nil {
		return nil, err
	}
	spec, err := bpf.LoadTcpwatch()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	t := &Tracer{Kernel: ki, Hooks: hooks()}
	if err := t.choosePrograms(spec); err != nil {
		return nil, err
	}
	if err := configure(spec, ki, cfg); err != nil {
		return nil, err
	}

	opts := ebpf.CollectionOptions{}
	if cfg.KernelBTF != "" {
		opts.Programs.KernelTypes = ki.btf
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, opts)
	if err != nil {
		return nil, loadError(err)
	}
	t.coll = coll
	if err := t.attach(); err != nil {
		t.Close()
		return nil, err
	}
	t.reader, err = ringbuf.NewReader(coll.Maps["events"])
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("opening the ring buffer: %w", err)
	}
	t.clock = wire.NewClock(wire.MonotonicNow(), time.Now())
	t.lazy = lazyWakeup(cfg.All, cfg.RingSize) != 0
	// The kernel's types were needed to choose and load the programs only;
	// hand their memory back before the long run.
	ki.btf = nil
	debug.FreeOSMemory()
	return t, nil
}

// choosePrograms keeps, for every hook, the first program whose tracepoint
// the kernel has with the arguments it expects, and deletes the rest.
func (t *Tracer) choosePrograms(spec *ebpf.CollectionSpec) error {
	for _, h := range t.Hooks {
		keep := map[string]bool{}
		if h.Name == "tcp_keepalive_timer" && t.Kernel.KeepaliveTimer == 0 {
			h.Reason = "the address of tcp_keepalive_timer is not in /proc/kallsyms (kernel.kptr_restrict?)"
		} else if len(h.Tracepoints) == 2 {
			// Both programs are needed together: entry and exit, or send and recv.
			ok := true
			for i, p := range h.Programs {
				tp := tpName(h.Tracepoints[i])
				if n := t.Kernel.tracepointParams(tp); n < h.Params[i] {
					ok = false
					h.Reason = fmt.Sprintf("the kernel has no tracepoint %s", h.Tracepoints[i])
					break
				}
				keep[p] = true
			}
			if !ok {
				keep = map[string]bool{}
			}
		} else {
			tp := tpName(h.Tracepoints[0])
			n := t.Kernel.tracepointParams(tp)
			for i, p := range h.Programs {
				if n == h.Params[i] || (i == len(h.Programs)-1 && n > h.Params[i]) {
					keep[p] = true
					break
				}
			}
			if len(keep) == 0 {
				h.Reason = fmt.Sprintf("the kernel has no tracepoint %s", h.Tracepoints[0])
			}
		}
		for _, p := range h.Programs {
			if !keep[p] {
				delete(spec.Programs, p)
				continue
			}
			if h.Program == "" {
				h.Program = p
			} else {
				h.Program += "+" + p
			}
		}
		if h.Program == "" && h.Required {
			return fmt.Errorf("cannot watch TCP on this kernel: %s", h.Reason)
		}
	}
	return nil
}

func tpName(tp string) string {
	_, name, _ := strings.Cut(tp, ":")
	return name
}

func configure(spec *ebpf.CollectionSpec, ki *KernelInfo, cfg Config) error {
	set := func(name string, v any) error {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("BPF object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
		return nil
	}
	var all uint8
	if cfg.All {
		all = 1
	}
	ring := cfg.RingSize
	if ring < os.Getpagesize() || ring&(ring-1) != 0 {
		return fmt.Errorf("ring buffer size %d is not a power of two of at least a page", ring)
	}
	spec.Maps["events"].MaxEntries = uint32(ring)
	for _, err := range []error{
		set("emit_all", all),
		set("hz", ki.HZ),
		set("keepalive_timer_fn", ki.KeepaliveTimer),
		set("filter_netns", cfg.FilterNetNS),
		set("filter_port", cfg.FilterPort),
		set("filter_pid", cfg.FilterPID),
		set("lazy_wakeup_bytes", lazyWakeup(cfg.All, ring)),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// PollInterval is how often a reader of an All tracer must look at the ring
// buffer: records are then written without waking it (see lazyWakeup).
const PollInterval = 50 * time.Millisecond

// lazyWakeup is the ring fill above which records wake the reader; below
// it, with All, they wait for the reader's next poll. A quarter of the ring
// leaves room for the bursts between two polls.
func lazyWakeup(all bool, ring int) uint64 {
	if !all {
		return 0
	}
	return uint64(ring / 4)
}

// loadError turns a load failure into one line that says what to do; the
// verifier's log follows on the next lines for whoever needs it.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("the kernel's verifier rejected a tcpwatch program (please report it with this output): %s\n%+v", ve.Cause, ve)
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: %v", ErrNotPermitted, err)
	}
	return fmt.Errorf("loading the BPF programs: %w", err)
}

func (t *Tracer) attach() error {
	for _, h := range t.Hooks {
		if h.Program == "" {
			continue
		}
		var via []string
		for _, p := range strings.Split(h.Program, "+") {
			l, err := link.AttachTracing(link.TracingOptions{Program: t.coll.Programs[p]})
			if err != nil {
				if h.Required {
					return fmt.Errorf("attaching %s: %w", p, err)
				}
				h.Reason = fmt.Sprintf("attaching %s: %v", p, err)
				via = nil
				break
			}
			t.links = append(t.links, l)
			via = append(via, p)
		}
		if via != nil {
			h.Attached = true
			h.Via = "tp_btf " + strings.Join(h.Tracepoints, ", ")
		}
	}
	return nil
}

// Read blocks for the next event and decodes it into ev, reusing one
// record buffer. It returns ErrClosed once Stop or Close has been called,
// and os.ErrDeadlineExceeded when a deadline set with SetDeadline passes.
func (t *Tracer) Read(ev *wire.Event) error {
	for {
		if t.lazy {
			// Records arrive without a wakeup (see lazyWakeup): look at
			// the ring at least every PollInterval.
			poll := time.Now().Add(PollInterval)
			if !t.deadline.IsZero() && t.deadline.Before(poll) {
				poll = t.deadline
			}
			t.reader.SetDeadline(poll)
		}
		err := t.reader.ReadInto(&t.record)
		if errors.Is(err, os.ErrDeadlineExceeded) && t.lazy && (t.deadline.IsZero() || time.Now().Before(t.deadline)) {
			continue
		}
		if errors.Is(err, ringbuf.ErrClosed) {
			return ErrClosed
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		if err != nil {
			return fmt.Errorf("reading the ring buffer: %w", err)
		}
		return wire.Decode(t.record.RawSample, t.clock, ev)
	}
}

// SetDeadline makes Read return os.ErrDeadlineExceeded when no record
// arrives before deadline (the zero time: no deadline), so a caller can do
// periodic work on one goroutine.
func (t *Tracer) SetDeadline(deadline time.Time) {
	t.deadline = deadline
	if !t.lazy {
		t.reader.SetDeadline(deadline)
	}
}

// SeedOwner tells the kernel half who owns a socket that existed before
// tcpwatch started, so its events carry the owner; notable marks a socket
// already in trouble, whose every event should be sent. The socket is named
// by its owner's pid and file descriptor: socket-local storage is keyed by
// a socket fd, so tcpwatch borrows a duplicate with pidfd_getfd (5.6+).
// Storage the kernel half made meanwhile is kept.
func (t *Tracer) SeedOwner(pid, fd int, comm string, notable bool) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open(%d): %w", pid, err)
	}
	defer unix.Close(pidfd)
	sockfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd(%d, %d): %w", pid, fd, err)
	}
	defer unix.Close(sockfd)
	info := bpf.TcpwatchSockInfo{Pid: uint32(pid)}
	copy(info.Comm[:len(info.Comm)-1], comm)
	if notable {
		info.Flags = sockNotable
	}
	err = t.coll.Maps["sock_infos"].Update(uint32(sockfd), &info, ebpf.UpdateNoExist)
	if errors.Is(err, ebpf.ErrKeyExist) {
		return nil
	}
	return err
}

// sockNotable is TW_SK_NOTABLE in bpf/tcpwatch.bpf.c.
const sockNotable = 1

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("tracer closed")

// Lost is the number of records the kernel could not put in the ring
// buffer because it was full.
func (t *Tracer) Lost() (uint64, error) {
	var perCPU []uint64
	if err := t.coll.Maps["counters"].Lookup(uint32(0), &perCPU); err != nil {
		return 0, fmt.Errorf("reading lost-record counter: %w", err)
	}
	var sum uint64
	for _, v := range perCPU {
		sum += v
	}
	return sum, nil
}

// Stop ends Read (it returns ErrClosed) but keeps the programs loaded, so
// counters can still be read.
func (t *Tracer) Stop() error {
	if t.reader == nil {
		return nil
	}
	return t.reader.Close()
}

// Close detaches every program and releases the ring buffer. Programs are
// attached through links held by file descriptors, so they also detach when
// the process dies, even by SIGKILL.
func (t *Tracer) Close() error {
	errs := []error{t.Stop()}
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	if t.coll != nil {
		t.coll.Close()
	}
	return errors.Join(errs...)
}
