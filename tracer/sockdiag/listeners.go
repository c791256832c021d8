package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Listener is a listening socket's accept queue as the kernel reports it
// (sock_diag): for a listener, idiag_rqueue is sk_ack_backlog (connections
// waiting for accept()) and idiag_wqueue sk_max_ack_backlog (the listen()
// backlog, capped by somaxconn); SK_MEMINFO_DROPS is sk_drops, which
// tcp_listendrop() counts for every SYN or handshake the listener turned
// away (LINUX_MIB_LISTENDROPS, per socket).
type Listener struct {
	NetNS  uint32
	Local  netip.AddrPort
	Inode  uint32
	Cookie uint64
	Queue  uint32
	Limit  uint32
	Drops  uint32
	// CgroupID is the cgroup v2 id of the socket (INET_DIAG_CGROUP_ID,
	// 5.7+: the cgroup of the task that created it); 0 unknown.
	CgroupID uint64
	// Space is its namespace's TCP counters at the same reading.
	Space NetnsCounters
}

// NetnsCounters are a network namespace's counters of what its listeners
// did with SYNs (TcpExt of /proc/net/netstat, read in the namespace) and
// its tcp_syncookies setting. The kernel counts SYN cookies per
// namespace only: no listener has its own count.
type NetnsCounters struct {
	// SyncookiesSent: SYN-ACKs answered with a cookie (SyncookiesSent);
	// ReqQFullDoCookies: of them, because a SYN queue was full
	// (TCPReqQFullDoCookies); ReqQFullDrop: SYNs dropped because a SYN
	// queue was full and cookies were off (TCPReqQFullDrop);
	// ListenOverflows: SYNs and ACKs that found an accept queue full.
	SyncookiesSent, ReqQFullDoCookies, ReqQFullDrop, ListenOverflows uint64
	// Syncookies is net.ipv4.tcp_syncookies (0 off, 1 when a SYN queue
	// is full, 2 always); -1 when it could not be read.
	Syncookies int
	// Read says the counters could be read.
	Read bool
}

const (
	inetDiagSkMemInfo = 7  // INET_DIAG_SKMEMINFO: u32[SK_MEMINFO_VARS]
	inetDiagCgroupID  = 21 // INET_DIAG_CGROUP_ID: u64, sent with every socket (5.7+)
	skMemInfoDrops    = 8  // SK_MEMINFO_DROPS
	listenState       = 1 << 10
)

// ListenerWatch reads the listeners of namespaces by inode, remembering
// how to open each: finding a namespace scans /proc, done at most every
// rescanEvery and only for an inode it has not seen.
type ListenerWatch struct {
	paths   map[uint32]string
	scanned time.Time
}

const rescanEvery = 10 * time.Second

// NewListenerWatch returns a watch with an empty namespace cache.
func NewListenerWatch() *ListenerWatch {
	return &ListenerWatch{paths: map[uint32]string{}}
}

// Namespace names a network namespace by inode, with the pid of a process
// that may be in it (a listener's owner): /proc/PID/ns/net opens it
// without a scan of /proc.
type Namespace struct {
	Inode, PID uint32
}

// Read lists the TCP listeners of the namespaces given. A namespace it
// cannot find or read is skipped and named in the error.
func (w *ListenerWatch) Read(spaces []Namespace) ([]Listener, error) {
	var out []Listener
	var errs []error
	for _, sp := range spaces {
		ns := sp.Inode
		path, ok := w.paths[ns]
		if !ok && sp.PID != 0 {
			hint := fmt.Sprintf("/proc/%d/ns/net", sp.PID)
			var st unix.Stat_t
			if unix.Stat(hint, &st) == nil && uint32(st.Ino) == ns {
				path, ok = hint, true
				w.paths[ns] = hint
			}
		}
		if !ok && time.Since(w.scanned) > rescanEvery {
			w.scanned = time.Now()
			if spaces, err := namespaces(); err == nil {
				w.paths = spaces
			}
			path, ok = w.paths[ns]
		}
		if !ok {
			continue
		}
		ls, err := readListeners(ns, path)
		if err != nil {
			delete(w.paths, ns) // gone, or another namespace now: look again later
			errs = append(errs, fmt.Errorf("netns %d: %w", ns, err))
			continue
		}
		out = append(out, ls...)
	}
	return out, errors.Join(errs...)
}

func readListeners(ns uint32, path string) ([]Listener, error) {
	var space NetnsCounters
	fd, err := diagSocketAnd(path, func() { space = readNetnsCounters() })
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []Listener
	for _, family := range []uint8{afInet, afInet6} {
		err := walkRaw(fd, family, listenState, 1<<(inetDiagSkMemInfo-1), func(s *diagSocket, raw []byte) {
			l := Listener{NetNS: ns, Local: s.local, Inode: s.inode, Cookie: s.cookie, Space: space,
				Queue: binary.NativeEndian.Uint32(raw[56:]), Limit: binary.NativeEndian.Uint32(raw[60:])}
			if mem := attr(raw[sizeofDiagMsg:], inetDiagSkMemInfo); len(mem) >= 4*(skMemInfoDrops+1) {
				l.Drops = binary.NativeEndian.Uint32(mem[4*skMemInfoDrops:])
			}
			if cg := attr(raw[sizeofDiagMsg:], inetDiagCgroupID); len(cg) >= 8 {
				l.CgroupID = binary.NativeEndian.Uint64(cg)
			}
			out = append(out, l)
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// attr returns the payload of the first rtattr of type typ in attrs.
func attr(attrs []byte, typ uint16) []byte {
	for len(attrs) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(attrs[0:]))
		if l < unix.SizeofRtAttr || l > len(attrs) {
			return nil
		}
		if binary.NativeEndian.Uint16(attrs[2:]) == typ {
			return attrs[unix.SizeofRtAttr:l]
		}
		adv := (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if adv > len(attrs) {
			return nil
		}
		attrs = attrs[adv:]
	}
	return nil
}

// readNetnsCounters reads the namespace of the calling thread's SYN
// counters: /proc/thread-self/net is the thread's namespace (/proc/net
// would be the process's first thread's).
func readNetnsCounters() NetnsCounters {
	c := NetnsCounters{Syncookies: -1}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_syncookies"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			c.Syncookies = v
		}
	}
	b, err := os.ReadFile("/proc/thread-self/net/netstat")
	if err != nil {
		return c
	}
	ext := netstatSection(string(b), "TcpExt:")
	c.SyncookiesSent, c.ReqQFullDoCookies = ext["SyncookiesSent"], ext["TCPReqQFullDoCookies"]
	c.ReqQFullDrop, c.ListenOverflows = ext["TCPReqQFullDrop"], ext["ListenOverflows"]
	c.Read = len(ext) > 0
	return c
}

// netstatSection parses one section of /proc/net/netstat: a line of
// names and a line of values, both starting with prefix.
func netstatSection(text, prefix string) map[string]uint64 {
	var names []string
	out := map[string]uint64{}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		fields := strings.Fields(line[len(prefix):])
		if names == nil {
			names = fields
			continue
		}
		for i, f := range fields {
			if i < len(names) {
				if v, err := strconv.ParseUint(f, 10, 64); err == nil {
					out[names[i]] = v
				}
			}
		}
		break
	}
	return out
}
