package tracer

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/bpf"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Config says what the kernel half sends and how much room it has.
type Config struct {
	// All sends every event. Without it the kernel keeps uneventful
	// lifecycles to itself and sends only what can become a narrative.
	All bool
	// Summarize (with All) sends a normal lifecycle's state changes in one
	// record (wire.KindLifecycle) at the socket's end, or before anything
	// else about it is sent: the tracker unfolds it into the records it
	// stands for (bpf/lifecycle.h).
	Summarize bool
	// RingSize is the ring buffer's size in bytes (a power of two, a
	// multiple of the page size); 0 means 4 MiB.
	RingSize int
	// Kernel-side filters, decided from the socket before a record is
	// made; zero values match everything. There is no pid filter here:
	// the kernel cannot know who owns accepted or pre-existing sockets,
	// so filtering by owner is user space's job.
	FilterNetNS uint32
	FilterPort  uint16
	// KernelBTF overrides /sys/kernel/btf/vmlinux.
	KernelBTF string

	// mapEntries overrides maps' max_entries before load, by name: tests
	// fill a map with a few connections to see what a full one does.
	mapEntries map[string]uint32
}

// Hook is one kernel code path tcpwatch watches, and how.
type Hook struct {
	Name        string   // the kernel function or event, as people know it
	Tracepoints []string // what it is attached to
	// Programs are the BPF programs (names from the generated bpf
	// package): alternatives in order of preference for a hook on one
	// tracepoint, or one per tracepoint, all needed, for a hook on several.
	Programs []string
	Params   []int  // the tracepoint's argument count each program needs
	Loses    string // what tcpwatch cannot tell without it
	Required bool   // nothing works without it

	Attached bool
	Via      string   // how it is attached, e.g. "tp_btf sock:inet_sock_set_state"
	Chosen   []string // the programs chosen (and attached, when Attached)
	Reason   string   // why not, when not attached
}

// hooks lists every path. The first usable program of a hook wins; the
// others are removed before load so the kernel never sees a program it
// cannot take.
func hooks() []*Hook {
	return []*Hook{
		{Name: "tcp_set_state", Tracepoints: []string{"sock:inet_sock_set_state"},
			Programs: []string{bpf.TcpwatchProgTwSetState}, Params: []int{3}, Required: true,
			Loses: "every verdict"},
		{Name: "tcp_retransmit_skb", Tracepoints: []string{"tcp:tcp_retransmit_skb"},
			Programs: []string{bpf.TcpwatchProgTwRetransmitErr, bpf.TcpwatchProgTwRetransmit}, Params: []int{3, 2},
			Loses: "stalled, recovered and the retransmission figures of retransmit_timeout, host_unreachable, connect_timeout"},
		{Name: "tcp_send_active_reset", Tracepoints: []string{"tcp:tcp_send_reset"},
			Programs: []string{bpf.TcpwatchProgTwSendResetReason, bpf.TcpwatchProgTwSendReset}, Params: []int{3, 2},
			Loses: "local_abort and the resets behind keepalive_timeout"},
		{Name: "tcp_keepalive_timer", Tracepoints: []string{"timer:timer_expire_entry", "timer:timer_expire_exit"},
			Programs: []string{bpf.TcpwatchProgTwTimerEntry, bpf.TcpwatchProgTwTimerExit}, Params: []int{2, 1},
			Loses: "keepalive_probing and the probe count of keepalive_timeout; the window-probe timer (zero_window, stalls of data that cannot leave); before 6.17, retransmissions that fail locally (tcp_write_timer)"},
		{Name: "tcp_receive_reset", Tracepoints: []string{"tcp:tcp_receive_reset"},
			Programs: []string{bpf.TcpwatchProgTwReceiveReset}, Params: []int{1},
			Loses: "peer_reset, peer_lost_state and connect_refused"},
		{Name: "inet_sk_error_report", Tracepoints: []string{"sock:inet_sk_error_report"},
			Programs: []string{bpf.TcpwatchProgTwErrorReport}, Params: []int{1},
			Loses: "the error report event (errors are still read from the socket when it closes)"},
		{Name: "tcp_cong_state_set", Tracepoints: []string{"tcp:tcp_cong_state_set"},
			Programs: []string{bpf.TcpwatchProgTwCongState}, Params: []int{2},
			Loses: "recovered (the end of an outage is seen only when the connection closes)"},
		{Name: "tcp_destroy_sock", Tracepoints: []string{"tcp:tcp_destroy_sock"},
			Programs: []string{bpf.TcpwatchProgTwDestroySock}, Params: []int{1},
			Loses: "the end of notable sockets, and prompt cleanup of keepalive probe counts (an LRU still bounds them)"},
		{Name: "kfree_skb", Tracepoints: []string{"skb:kfree_skb"},
			Programs: []string{bpf.TcpwatchProgTwDropRxsk, bpf.TcpwatchProgTwDrop}, Params: []int{4, 3},
			Loses: "where a troubled connection's packets die: drops on this host and their reasons, left_host; with --all, the TIME_WAIT notices time_wait_syn_rejected, time_wait_rst_ended, time_wait_rst_ignored"},
		{Name: "tcp_rtx_synack", Tracepoints: []string{"tcp:tcp_retransmit_synack"},
			Programs: []string{bpf.TcpwatchProgTwSynackRetransmit}, Params: []int{2},
			Loses: "the SYN-ACK retransmissions of listeners whose clients do not finish their handshake (synack_unanswered, and the clients waiting on a full accept queue)"},
	}
}

// Tracer is the loaded, attached kernel half and the ring buffer it feeds.
type Tracer struct {
	Kernel *KernelInfo
	Hooks  []*Hook

	coll     *ebpf.Collection
	links    []link.Link
	attached map[string]*ebpf.Program // by program name
	reader   *ringbuf.Reader
	record   ringbuf.Record
	clock    wire.Clock
	lazy     bool      // records are written without waking the reader
	deadline time.Time // the caller's, for Read
	// ring is the ring buffer's map, registered with Go's netpoller: Read
	// waits there for records (see waitForRecords); nil if that failed.
	ring     *os.File
	ringConn syscall.RawConn
	stopped  atomic.Bool // Stop was called (with ring)
	// leftAtStop is what the ring held when Stop was called, less what
	// Read has taken since: it is read out, then Read says ErrClosed.
	leftAtStop atomic.Int64
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
	// Before 5.11 the kernel charges BPF maps to RLIMIT_MEMLOCK (64 KiB by
	// default) and answers EPERM beyond it; later kernels use the memory
	// cgroup, and this is a no-op there. Only this process's limit moves.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising the locked-memory limit for BPF maps: %w", err)
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
		if ki.BelowMinimum() {
			return nil, belowMinimumError(ki, err)
		}
		return nil, loadError(err)
	}
	t.coll = coll
	if err := t.attach(); err != nil {
		t.Close()
		return nil, err
	}
	t.reader, err = ringbuf.NewReader(coll.Maps[bpf.TcpwatchMapEvents])
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("opening the ring buffer: %w", err)
	}
	t.clock = wire.NewClock(wire.MonotonicNow(), time.Now())
	t.lazy = lazyWakeup(cfg.All, cfg.RingSize) != 0
	t.ring, t.ringConn = pollable(coll.Maps[bpf.TcpwatchMapEvents].FD())
	if t.ringConn != nil {
		// Read waits in the netpoller; ReadInto must never block (a
		// wait there, with a record in the ring and no wakeup due for
		// it, could last until the next wakeup).
		t.reader.SetDeadline(time.Unix(1, 0))
	}
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
		if h.Name == "tcp_keepalive_timer" && !t.Kernel.KeepaliveTimerVisible {
			h.Reason = "the address of tcp_keepalive_timer is not in /proc/kallsyms (kernel.kptr_restrict?)"
		} else if len(h.Tracepoints) == 2 {
			// Both programs are needed together: entry and exit.
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
		h.Chosen = nil
		for _, p := range h.Programs {
			if !keep[p] {
				delete(spec.Programs, p)
				continue
			}
			h.Chosen = append(h.Chosen, p)
		}
		if len(h.Chosen) == 0 && h.Required {
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
	ring := cfg.RingSize
	if ring < os.Getpagesize() || ring&(ring-1) != 0 {
		return fmt.Errorf("ring buffer size %d is not a power of two of at least a page", ring)
	}
	// Maps and variables only: choosePrograms may have removed programs.
	var specs struct {
		bpf.TcpwatchMapSpecs
		bpf.TcpwatchVariableSpecs
	}
	if err := spec.Assign(&specs); err != nil {
		return fmt.Errorf("BPF object: %w", err)
	}
	specs.Events.MaxEntries = uint32(ring)
	for name, n := range cfg.mapEntries {
		m, ok := spec.Maps[name]
		if !ok {
			return fmt.Errorf("no map %s to resize", name)
		}
		m.MaxEntries = n
	}
	tc := bpf.TcpwatchTwConfig{
		LazyWakeupBytes: lazyWakeup(cfg.All, ring),
		Hz:              ki.HZ,
		FilterNetns:     cfg.FilterNetNS,
		FilterPort:      cfg.FilterPort,
		V6XmitStart:     ki.V6XmitStart,
		V6XmitEnd:       ki.V6XmitEnd,
	}
	if cfg.All {
		tc.EmitAll = 1
	}
	if cfg.All && cfg.Summarize {
		tc.Summarize = 1
	} else {
		specs.LifeSlots.MaxEntries = 1 // never used: no memory for the slots
		specs.LifeClones.MaxEntries = 1
	}
	if err := specs.TwCfg.Set(tc); err != nil {
		return fmt.Errorf("setting %s: %w", bpf.TcpwatchVarTwCfg, err)
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

// belowMinimumError explains a load failure on a kernel older than
// MinKernel: not a bug to report, a kernel without what the programs use.
// The verifier's own reason (its last line before the statistics, such as
// "unknown func bpf_sk_storage_get#107") names the missing piece.
func belowMinimumError(ki *KernelInfo, err error) error {
	why := err.Error()
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		for i := len(ve.Log) - 1; i >= 0; i-- {
			if line := strings.TrimSpace(ve.Log[i]); line != "" && !strings.HasPrefix(line, "processed ") {
				why = "its verifier says " + strconv.Quote(line)
				break
			}
		}
	}
	return fmt.Errorf("kernel %s is older than %s, the oldest tcpwatch runs on, and cannot load its programs: %s (tracing programs gained bpf_get_current_task_btf and socket-local storage in 5.11, bpf_get_socket_cookie in 5.12)",
		ki.Release, MinKernel, why)
}

// loadError turns a load failure into one line that says what to do; the
// verifier's log follows on the next lines for whoever needs it.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("the kernel's verifier rejected a tcpwatch program (please report it with this output): %s\n%+v", ve.Cause, ve)
	}
	if errors.Is(err, unix.EPERM) && CheckPrivileges() != nil {
		return fmt.Errorf("%w: %v", ErrNotPermitted, err)
	}
	return fmt.Errorf("loading the BPF programs: %w", err)
}

func (t *Tracer) attach() error {
	t.attached = map[string]*ebpf.Program{}
	for _, h := range t.Hooks {
		if len(h.Chosen) == 0 {
			continue
		}
		var links []link.Link
		for _, p := range h.Chosen {
			prog := t.coll.Programs[p]
			l, err := link.AttachTracing(link.TracingOptions{Program: prog})
			if err != nil {
				for _, l := range links {
					l.Close()
				}
				if h.Required {
					return fmt.Errorf("attaching %s: %w", p, err)
				}
				h.Reason = fmt.Sprintf("attaching %s: %v", p, err)
				links = nil
				break
			}
			links = append(links, l)
		}
		if links == nil {
			continue
		}
		t.links = append(t.links, links...)
		for _, p := range h.Chosen {
			t.attached[p] = t.coll.Programs[p]
		}
		h.Attached = true
		h.Via = "tp_btf " + strings.Join(h.Tracepoints, ", ")
	}
	return nil
}

// Read blocks for the next event and decodes it into ev, reusing one
// record buffer. After Stop it returns the records the ring held at the
// stop, then ErrClosed (at once after Close); os.ErrDeadlineExceeded when
// a deadline set with SetDeadline passes.
func (t *Tracer) Read(ev *wire.Event) error {
	if t.ringConn == nil {
		return t.readBlocking(ev)
	}
	for {
		if t.stopped.Load() {
			return t.readLeft(ev)
		}
		// With records in the ring (a batch being read) there is no wait
		// and no clock reading, which costs tens of ns a record.
		if t.reader.AvailableBytes() == 0 {
			wait := t.deadline
			if t.lazy {
				// Records arrive without a wakeup (see lazyWakeup): look
				// at the ring at least every PollInterval.
				wait = time.Now().Add(PollInterval)
				if !t.deadline.IsZero() && t.deadline.Before(wait) {
					wait = t.deadline
				}
			}
			t.waitForRecords(wait)
		}
		// The reader's own deadline is always past (see pollable):
		// ReadInto never blocks, it returns a record or
		// os.ErrDeadlineExceeded (nothing but discarded records, or the
		// wait above ended by its deadline).
		err := t.reader.ReadInto(&t.record)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if !t.deadline.IsZero() && !time.Now().Before(t.deadline) {
				return err
			}
			continue
		}
		if errors.Is(err, ringbuf.ErrClosed) {
			return ErrClosed
		}
		if err != nil {
			return fmt.Errorf("reading the ring buffer: %w", err)
		}
		return wire.Decode(t.record.RawSample, t.clock, ev)
	}
}

// readLeft is Read after Stop: the records the ring held when Stop was
// called are still read (written before the stop, they would otherwise be
// neither told nor counted as lost), then it says ErrClosed. Only those:
// records written since, by a flood that goes on, cannot keep Read going.
func (t *Tracer) readLeft(ev *wire.Event) error {
	if t.leftAtStop.Load() <= 0 || t.reader.AvailableBytes() == 0 {
		return ErrClosed
	}
	// The reader's deadline is past (see pollable): ReadInto never waits.
	if err := t.reader.ReadInto(&t.record); err != nil {
		return ErrClosed
	}
	t.leftAtStop.Add(-int64(ringRecordSize(len(t.record.RawSample))))
	return wire.Decode(t.record.RawSample, t.clock, ev)
}

// ringRecordSize is the room a record of n bytes takes in the ring: the
// kernel's 8-byte header (BPF_RINGBUF_HDR_SZ) and the data rounded up to 8.
func ringRecordSize(n int) int { return 8 + (n+7)&^7 }

// readBlocking is Read when the ring could not be registered with the
// netpoller: ReadInto waits in its own epoll_wait.
func (t *Tracer) readBlocking(ev *wire.Event) error {
	for {
		if t.lazy {
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

// pollable registers a duplicate of the ring buffer map's descriptor with
// Go's netpoller (the kernel's ring buffer supports poll).
func pollable(mapFD int) (*os.File, syscall.RawConn) {
	fd, err := unix.FcntlInt(uintptr(mapFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, nil
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, nil
	}
	f := os.NewFile(uintptr(fd), "ringbuf")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil
	}
	return f, rc
}

// waitForRecords parks the reading goroutine in Go's netpoller until the
// ring holds a record or until deadline (zero: none); ReadInto then finds
// the record, or the deadline, at once. Left to ReadInto, the wait is a
// blocking epoll_wait that keeps the goroutine's P in a system call: the
// runtime's sysmon then never sleeps deeply (it polls every 20 µs to
// 10 ms, retaking the P every 10 ms), which cost tcpwatch --all about 2%
// of a CPU while idle and a tenth of its CPU under churn (issue #11).
// Errors (deadline, Stop) are left for ReadInto to report.
func (t *Tracer) waitForRecords(deadline time.Time) {
	if t.reader.AvailableBytes() > 0 {
		return
	}
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return
	}
	if t.ring.SetReadDeadline(deadline) != nil {
		return
	}
	t.ringConn.Read(func(uintptr) bool { return t.reader.AvailableBytes() > 0 })
}

// Buffered says whether the ring holds records not read yet: when it does
// not, the next Read waits.
func (t *Tracer) Buffered() bool {
	if t.ring == nil {
		return false // the reader may be closed by Stop: no unlocked look
	}
	if t.stopped.Load() {
		return t.leftAtStop.Load() > 0 && t.reader.AvailableBytes() > 0
	}
	return t.reader.AvailableBytes() > 0
}

// SetDeadline makes Read return os.ErrDeadlineExceeded when no record
// arrives before deadline (the zero time: no deadline), so a caller can do
// periodic work on one goroutine.
func (t *Tracer) SetDeadline(deadline time.Time) {
	t.deadline = deadline
	if !t.lazy && t.ringConn == nil {
		t.reader.SetDeadline(deadline)
	}
}

// ResetReasons names the reasons this kernel gives for the resets it sends
// (its enum sk_rst_reason, read from its BTF when the tracer was made):
// the one route by which those names reach the tracker and the output.
func (t *Tracer) ResetReasons() tcp.ResetReasons { return t.Kernel.ResetReasons }

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("tracer closed")

// Losses are the events the kernel half saw but could not send.
type Losses struct {
	// RingFull counts records dropped because the ring buffer was full.
	RingFull uint64
	// Recursion counts program runs the kernel skipped because another
	// run of a tp_btf program was already active on that CPU (a
	// tracepoint hit inside the program, or in the same interrupted
	// context): whatever the run would have sent is lost. The kernel
	// counts them per program (recursion_misses, as bpftool shows).
	Recursion uint64
	// RecursionByProgram has every attached program, by name.
	RecursionByProgram map[string]uint64
	// Skipped are the kernel half's own skips (not part of Total).
	Skipped Skipped
}

// Total is every loss, of both kinds.
func (l Losses) Total() uint64 { return l.RingFull + l.Recursion }

// Skipped counts what the kernel half would have kept or sent but could
// not, for want of room (bpf/maps.h, enum tw_counter): no record is lost
// in the ring, but a story may be missing a part.
type Skipped struct {
	// NoStorage: a socket's storage could not be made (no memory), so it
	// was never marked notable and its later uneventful records (its
	// owner's close, its destruction) were not sent in default mode.
	NoStorage uint64
	// TroubledFull: a connection in trouble could not be marked, the
	// map of them being full: its dropped packets went untold.
	TroubledFull uint64
	// KeepaliveFull: a keepalive probe could not be remembered, the map
	// being full: the peer's answer to it went untold.
	KeepaliveFull uint64
	// SynackFull: a listener's SYN-ACK retransmission could not be
	// counted, the map of listeners being full.
	SynackFull uint64
}

// Total is every skip.
func (s Skipped) Total() uint64 { return s.NoStorage + s.TroubledFull + s.KeepaliveFull + s.SynackFull }

// EndsAtRisk counts the skips that can keep a connection's end from being
// told: a socket never marked notable, or one in trouble not marked
// (whose end tw_destroy_sock tells only when it is).
func (s Skipped) EndsAtRisk() uint64 { return s.NoStorage + s.TroubledFull }

// counter sums one of the kernel's per-CPU counters (enum tw_counter).
func (t *Tracer) counter(idx bpf.TcpwatchTwCounter) (uint64, error) {
	var perCPU []uint64
	if err := t.coll.Maps[bpf.TcpwatchMapCounters].Lookup(uint32(idx), &perCPU); err != nil {
		return 0, fmt.Errorf("reading kernel counter %d: %w", idx, err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// Losses reads the kernel's loss and skip counters.
func (t *Tracer) Losses() (Losses, error) {
	l := Losses{RecursionByProgram: make(map[string]uint64, len(t.attached))}
	for _, c := range []struct {
		idx bpf.TcpwatchTwCounter
		to  *uint64
	}{
		{bpf.TcpwatchTwCounterTW_CNT_LOST, &l.RingFull},
		{bpf.TcpwatchTwCounterTW_CNT_NO_STORAGE, &l.Skipped.NoStorage},
		{bpf.TcpwatchTwCounterTW_CNT_TROUBLED_FULL, &l.Skipped.TroubledFull},
		{bpf.TcpwatchTwCounterTW_CNT_KA_FULL, &l.Skipped.KeepaliveFull},
		{bpf.TcpwatchTwCounterTW_CNT_SYNACK_FULL, &l.Skipped.SynackFull},
	} {
		n, err := t.counter(c.idx)
		if err != nil {
			return Losses{}, err
		}
		*c.to = n
	}
	for name, prog := range t.attached {
		st, err := prog.Stats()
		if err != nil {
			return Losses{}, fmt.Errorf("reading %s's statistics: %w", name, err)
		}
		l.RecursionByProgram[name] = st.RecursionMisses
		l.Recursion += st.RecursionMisses
	}
	return l, nil
}

// DropPath is what the drop program (skb:kfree_skb) did: Seen counts the
// IP packets the kernel dropped while some connection was in trouble (the
// others stop at the gate), Kept those of a connection in trouble
// (each became, or was folded into, a record). Runs and Runtime are the
// kernel's statistics of the program (every drop of every protocol),
// counted only while BPF statistics are on (kernel.bpf_stats_enabled or
// ebpf.EnableStats); zero otherwise.
type DropPath struct {
	Seen, Kept uint64
	Runs       uint64
	Runtime    time.Duration
}

// DropPath reads the drop program's counters.
func (t *Tracer) DropPath() (DropPath, error) {
	var d DropPath
	var err error
	if d.Seen, err = t.counter(bpf.TcpwatchTwCounterTW_CNT_DROPS_SEEN); err != nil {
		return d, err
	}
	if d.Kept, err = t.counter(bpf.TcpwatchTwCounterTW_CNT_DROPS_KEPT); err != nil {
		return d, err
	}
	for _, name := range []string{bpf.TcpwatchProgTwDropRxsk, bpf.TcpwatchProgTwDrop} {
		if prog, ok := t.attached[name]; ok {
			st, err := prog.Stats()
			if err != nil {
				return d, fmt.Errorf("reading %s's statistics: %w", name, err)
			}
			d.Runs, d.Runtime = st.RunCount, st.Runtime
		}
	}
	return d, nil
}

// SeesTimeWait says whether the drop path names the timewait socket a
// dropped SYN or RST met (kfree_skb's rx_sk, 6.11+): without it, --all
// cannot tell what becomes of a 4-tuple in TIME_WAIT.
func (t *Tracer) SeesTimeWait() bool {
	_, ok := t.attached[bpf.TcpwatchProgTwDropRxsk]
	return ok
}

// Stop ends Read (it returns ErrClosed once it has read what the ring held
// at the stop) but keeps the programs loaded, so counters can still be
// read. It may be called from another goroutine while Read runs.
func (t *Tracer) Stop() error {
	if t.reader == nil {
		return nil
	}
	if t.ring != nil {
		// Read waits in the netpoller and checks stopped: the reader
		// itself stays open until Close (its AvailableBytes, which Read
		// uses unlocked, must not meet a closed ring).
		t.leftAtStop.Store(int64(t.reader.AvailableBytes()))
		t.stopped.Store(true)
		t.ring.Close() // wakes a Read waiting in waitForRecords
		return nil
	}
	return t.reader.Close()
}

// Close detaches every program and releases the ring buffer. Programs are
// attached through links held by file descriptors, so they also detach when
// the process dies, even by SIGKILL.
func (t *Tracer) Close() error {
	errs := []error{t.Stop()}
	t.leftAtStop.Store(0) // nothing is read from a closed ring
	if t.ring != nil && t.reader != nil {
		errs = append(errs, t.reader.Close())
	}
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	if t.coll != nil {
		t.coll.Close()
	}
	return errors.Join(errs...)
}

// DropReasons names the kernel's drop reasons (enum skb_drop_reason).
func (t *Tracer) DropReasons() tcp.DropReasons { return t.Kernel.DropReasons }

// SeesDrops says whether the drop program is attached: narratives can
// then say where a troubled connection's packets died.
func (t *Tracer) SeesDrops() bool {
	for _, h := range t.Hooks {
		if h.Name == "kfree_skb" {
			return h.Attached
		}
	}
	return false
}

// Degraded lists what this kernel lets tcpwatch tell only in part, though
// every hook attached: fields left empty, figures learned another way.
func (t *Tracer) Degraded() []string {
	var out []string
	if t.Kernel.KeepaliveTimerField == "" {
		out = append(out, "keepalive timer: this kernel's BTF has neither inet_connection_sock.icsk_keepalive_timer nor sock.sk_timer: "+
			"keepalive_probing and keepalive_timeout are not told")
	}
	if t.Kernel.WriteTimerField == "" {
		out = append(out, "write timer: this kernel's BTF has neither inet_connection_sock.icsk_retransmit_timer nor sock.tcp_retransmit_timer: "+
			"window probes are not seen (no zero_window, no stalled with new data held back) and their drops are not wanted")
	}
	for _, h := range t.Hooks {
		switch {
		case slices.Contains(h.Chosen, bpf.TcpwatchProgTwSendReset):
			out = append(out, "reset_reason is empty: this kernel's tcp_send_reset names no reason (6.10+); "+
				"local_abort and keepalive_timeout are still told, a close with unread data is still the owner's")
		case slices.Contains(h.Chosen, bpf.TcpwatchProgTwRetransmit):
			out = append(out, "retransmissions that fail on this host (a pulled cable) reach no tracepoint before 6.17: "+
				"they are seen at the retransmission timer, counted in failed_sends with no errno")
		case slices.Contains(h.Chosen, bpf.TcpwatchProgTwDrop):
			out = append(out, "drops: kfree_skb names no receiving socket before 6.11: incoming drops are matched to their connection "+
				"by their headers alone (the same facts; a packet whose headers cannot be read is not matched); "+
				"with --all, a SYN or RST dropped by a TIME_WAIT is not told (time_wait_syn_rejected, time_wait_rst_ended, time_wait_rst_ignored need the timewait socket it names)")
		}
		if h.Name == "kfree_skb" && h.Attached {
			out = append(out, dropReasonsDegraded(t.Kernel.DropReasons)...)
			if t.Kernel.V6XmitStart == 0 {
				out = append(out, "drops: /proc/kallsyms shows no address for inet6_csk_xmit (kernel.kptr_restrict?): an IPv6 segment whose route lookup failed, "+
					"which the kernel frees with no reason, is told as dropped by the kernel (NOT_SPECIFIED), not by routing")
			}
		}
	}
	return out
}

// dropReasonsWatched are the drop reasons the words name a place for:
// this host's firewall, its neighbour table, its routes, its devices and
// queues, the listener's queue. A kernel whose enum skb_drop_reason lacks
// one reports those drops under a coarser reason (NOT_SPECIFIED).
var dropReasonsWatched = []string{"NETFILTER_DROP", "NEIGH_FAILED", "NEIGH_QUEUEFULL", "IP_OUTNOROUTES",
	"QDISC_DROP", "DEV_READY", "TCP_LISTEN_OVERFLOW", "TCP_ZEROWINDOW"}

func dropReasonsDegraded(r tcp.DropReasons) []string {
	if len(r) == 0 {
		return []string{"drops: this kernel's BTF has no enum skb_drop_reason: drop reasons are shown as numbers"}
	}
	have := map[string]bool{}
	for _, name := range r {
		have[name] = true
	}
	var missing []string
	for _, name := range dropReasonsWatched {
		if !have[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("drops: this kernel's enum skb_drop_reason has no %s: such drops are counted under a coarser reason (NOT_SPECIFIED)",
		strings.Join(missing, ", "))}
}
