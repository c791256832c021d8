package tracer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// KernelInfo is what tcpwatch learns about the running kernel before it
// loads anything.
type KernelInfo struct {
	Release   string
	BTFSource string // file the kernel's types came from
	HZ        uint32
	HZSource  string
	// KeepaliveTimerVisible and WriteTimerVisible say whether
	// /proc/kallsyms shows tcp_keepalive_timer and tcp_write_timer with
	// an address. The timer programs name them as weak __ksym externs
	// that the loader (cilium/ebpf) resolves from that same file; one it
	// cannot see resolves to 0 and its timer path stays silent. They are
	// read here only to say so.
	KeepaliveTimerVisible bool
	WriteTimerVisible     bool
	// KeepaliveTimerField and WriteTimerField name the member that holds
	// each timer in this kernel's BTF (the timer programs find the socket
	// from it, bpf/keepalive.h); empty when neither known place exists and
	// that timer's path stays silent. The retransmission timer moved from
	// inet_connection_sock to struct sock in the series that moved the
	// keepalive timer the other way (7.3 has both moves).
	KeepaliveTimerField string
	WriteTimerField     string
	ResetReasons        tcp.ResetReasons
	// DropReasons names kfree_skb's reasons (enum skb_drop_reason);
	// empty on a kernel whose BTF lacks the enum.
	DropReasons tcp.DropReasons
	// V6XmitStart and V6XmitEnd bound inet6_csk_xmit's code (from
	// /proc/kallsyms; 0 when it hides addresses): the drop program names
	// the segments it frees, whose IPv6 route lookup failed and to which
	// the kernel gives no drop reason.
	V6XmitStart, V6XmitEnd uint64

	btf *btf.Spec
}

const defaultBTFPath = "/sys/kernel/btf/vmlinux"

// ErrNoBTF means the kernel exposes no type information; CO-RE cannot
// relocate without it.
var ErrNoBTF = errors.New("this kernel has no BTF type information")

// ProbeKernel reads the kernel's types and the few facts BPF cannot know by
// itself. btfPath overrides /sys/kernel/btf/vmlinux (for kernels without
// CONFIG_DEBUG_INFO_BTF, a file made with pahole or from btfhub).
func ProbeKernel(btfPath string) (*KernelInfo, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return nil, fmt.Errorf("uname: %w", err)
	}
	ki := &KernelInfo{Release: unix.ByteSliceToString(uts.Release[:])}

	var spec *btf.Spec
	var err error
	if btfPath == "" {
		// Memory-mapped and decoded lazily: far less resident than a full parse.
		if _, statErr := os.Stat(defaultBTFPath); statErr != nil {
			return nil, fmt.Errorf("%w (%s is missing): give a BTF file with --kernel-btf", ErrNoBTF, defaultBTFPath)
		}
		spec, err = btf.LoadKernelSpec()
		btfPath = defaultBTFPath
	} else {
		spec, err = btf.LoadSpec(btfPath)
	}
	if err != nil {
		return nil, fmt.Errorf("reading kernel BTF from %s: %w", btfPath, err)
	}
	ki.btf, ki.BTFSource = spec, btfPath

	ki.HZ, ki.HZSource, err = kernelHZ(ki.Release)
	if err != nil {
		return nil, err
	}
	visible := ksymsVisible("/proc/kallsyms", "tcp_keepalive_timer", "tcp_write_timer")
	ki.KeepaliveTimerVisible, ki.WriteTimerVisible = visible["tcp_keepalive_timer"], visible["tcp_write_timer"]
	ki.KeepaliveTimerField = firstMember(spec, "inet_connection_sock.icsk_keepalive_timer", "sock.sk_timer")
	ki.WriteTimerField = firstMember(spec, "inet_connection_sock.icsk_retransmit_timer", "sock.tcp_retransmit_timer")
	ki.ResetReasons = resetReasonsFromBTF(spec)
	ki.DropReasons = dropReasonsFromBTF(spec)
	ki.V6XmitStart, ki.V6XmitEnd = ksymExtent("/proc/kallsyms", "inet6_csk_xmit")
	return ki, nil
}

// tracepointParams returns how many arguments a BTF tracepoint passes to a
// tp_btf program (its btf_trace_<name> prototype less the leading context
// pointer), or -1 if the kernel has no such tracepoint.
func (ki *KernelInfo) tracepointParams(name string) int {
	var td *btf.Typedef
	if err := ki.btf.TypeByName("btf_trace_"+name, &td); err != nil {
		return -1
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return -1
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok || len(proto.Params) == 0 {
		return -1
	}
	return len(proto.Params) - 1
}

func resetReasonsFromBTF(spec *btf.Spec) tcp.ResetReasons {
	var enum *btf.Enum
	if err := spec.TypeByName("sk_rst_reason", &enum); err != nil {
		return tcp.FallbackResetReasons
	}
	r := make(tcp.ResetReasons, len(enum.Values))
	for _, v := range enum.Values {
		r[int32(v.Value)] = tcp.TrimReasonPrefix(v.Name)
	}
	return r
}

func dropReasonsFromBTF(spec *btf.Spec) tcp.DropReasons {
	var enum *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &enum); err != nil {
		return tcp.DropReasons{}
	}
	r := make(tcp.DropReasons, len(enum.Values))
	for _, v := range enum.Values {
		r[int32(v.Value)] = tcp.TrimDropReasonPrefix(v.Name)
	}
	return r
}

// kernelHZ finds CONFIG_HZ: socket timers (RTO, keepalive) are in jiffies.
// The kernel config says it exactly; without one, count jiffies against
// the clock.
func kernelHZ(release string) (uint32, string, error) {
	for _, path := range []string{"/proc/config.gz", "/boot/config-" + release} {
		hz, err := hzFromConfig(path)
		if err == nil {
			return hz, path, nil
		}
	}
	hz, err := hzFromTimerList()
	if err != nil {
		return 0, "", fmt.Errorf("cannot tell the kernel's HZ (no kernel config, %v)", err)
	}
	return hz, "/proc/timer_list (measured)", nil
}

func hzFromConfig(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return 0, err
		}
		defer gz.Close()
		r = gz
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			hz, err := strconv.ParseUint(v, 10, 32)
			if err != nil || hz == 0 {
				return 0, fmt.Errorf("%s: bad CONFIG_HZ %q", path, v)
			}
			return uint32(hz), nil
		}
	}
	return 0, fmt.Errorf("%s: no CONFIG_HZ", path)
}

func hzFromTimerList() (uint32, error) {
	sample := func() (ns, jiffies uint64, err error) {
		b, err := os.ReadFile("/proc/timer_list")
		if err != nil {
			return 0, 0, err
		}
		for line := range bytes.Lines(b) {
			s := strings.TrimSpace(string(line))
			if v, ok := strings.CutPrefix(s, "now at "); ok && ns == 0 {
				ns, _ = strconv.ParseUint(strings.TrimSuffix(v, " nsecs"), 10, 64)
			} else if v, ok := strings.CutPrefix(s, "jiffies: "); ok && jiffies == 0 {
				jiffies, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		if ns == 0 || jiffies == 0 {
			return 0, 0, errors.New("/proc/timer_list has no jiffies")
		}
		return ns, jiffies, nil
	}
	ns1, j1, err := sample()
	if err != nil {
		return 0, err
	}
	time.Sleep(200 * time.Millisecond)
	ns2, j2, err := sample()
	if err != nil || ns2 <= ns1 {
		return 0, errors.New("/proc/timer_list did not advance")
	}
	measured := float64(j2-j1) / (float64(ns2-ns1) / 1e9)
	best, bestDiff := uint32(0), 1e9
	for _, hz := range []uint32{100, 250, 300, 1000} {
		if d := abs(measured - float64(hz)); d < bestDiff {
			best, bestDiff = hz, d
		}
	}
	return best, nil
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// ksymsVisible says which of the named kernel functions /proc/kallsyms
// lists with a non-zero address (kptr_restrict shows zeros). It is a report
// only: the loader resolves the programs' __ksym externs itself.
func ksymsVisible(path string, names ...string) map[string]bool {
	seen := make(map[string]bool, len(names))
	f, err := os.Open(path)
	if err != nil {
		return seen
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || (fields[1] != "t" && fields[1] != "T") || !slices.Contains(names, fields[2]) {
			continue
		}
		if addr, err := strconv.ParseUint(fields[0], 16, 64); err == nil && addr != 0 {
			seen[fields[2]] = true
		}
	}
	return seen
}

// ksymExtent finds where a kernel function's code begins and ends in
// /proc/kallsyms: its address, and the next text symbol's above it. Zero
// when the file hides addresses (kptr_restrict) or lacks the function.
func ksymExtent(path, name string) (start, end uint64) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	var addrs []uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || (fields[1] != "t" && fields[1] != "T") {
			continue
		}
		addr, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil || addr == 0 {
			continue
		}
		if fields[2] == name && len(fields) == 3 {
			start = addr
		}
		addrs = append(addrs, addr)
	}
	if start == 0 {
		return 0, 0
	}
	for _, a := range addrs {
		if a > start && (end == 0 || a < end) {
			end = a
		}
	}
	if end == 0 {
		return 0, 0
	}
	return start, end
}

// MinKernel is the oldest kernel tcpwatch is proven on: Debian 12's 6.1,
// the oldest of the kernel matrix (make test-kernels). Older kernels lack
// what the programs use (bpf_get_current_task_btf before 5.11,
// inet_sk_error_report before 5.14, tcp_cong_state_set before 5.19).
const MinKernel = "6.1"

// BelowMinimum says whether the running kernel is older than MinKernel.
func (ki *KernelInfo) BelowMinimum() bool {
	return versionLess(ki.Release, MinKernel)
}

// versionLess compares the leading "major.minor" of two kernel releases.
func versionLess(release, min string) bool {
	parse := func(s string) (int, int) {
		var major, minor int
		fmt.Sscanf(s, "%d.%d", &major, &minor)
		return major, minor
	}
	a1, a2 := parse(release)
	b1, b2 := parse(min)
	return a1 < b1 || (a1 == b1 && a2 < b2)
}

// firstMember returns the first of the "struct.member" names this kernel's
// BTF has, looking into anonymous unions and structs as C does; "" if none.
func firstMember(spec *btf.Spec, candidates ...string) string {
	for _, c := range candidates {
		structName, member, _ := strings.Cut(c, ".")
		var st *btf.Struct
		if err := spec.TypeByName(structName, &st); err != nil {
			continue
		}
		if hasMember(st.Members, member) {
			return c
		}
	}
	return ""
}

func hasMember(members []btf.Member, name string) bool {
	for _, m := range members {
		if m.Name == name {
			return true
		}
		if m.Name != "" {
			continue
		}
		switch t := btf.UnderlyingType(m.Type).(type) {
		case *btf.Union:
			if hasMember(t.Members, name) {
				return true
			}
		case *btf.Struct:
			if hasMember(t.Members, name) {
				return true
			}
		}
	}
	return false
}
