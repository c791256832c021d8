// Package sockdiag lists the TCP connections that already exist when
// tcpwatch starts, in every network namespace, with their owners: incidents
// begin before the tool does.
package sockdiag

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/netnsexec"
	"github.com/tcpwatch/tcpwatch/tracer/owners"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// Socket is one existing TCP socket, as sock_diag and /proc describe it.
type Socket struct {
	Cookie        uint64
	NetNS         uint32
	Local, Remote netip.AddrPort
	State         tcp.State
	Inode         uint32
	PID           uint32 // owner, 0 if no process holds it (orphaned)
	Comm          string
	KeepaliveOn   bool // the keepalive timer is armed
	// TimerExpires is the time left on the socket's pending timer
	// (idiag_expires): with KeepaliveOn, until the next keepalive probe.
	TimerExpires time.Duration
	// RetransmitArmed says the retransmission timer is pending, to fire
	// in RetransmitIn. A timer already due when the table was read (its
	// handler not yet run) shows 0: the kernel clamps idiag_expires at 0
	// (jiffies_delta_to_msecs). ReadAt is the kernel's CLOCK_MONOTONIC when
	// the table was read: the figures are that moment's, which can be a
	// while before the snapshot returns (every namespace, every /proc
	// entry).
	RetransmitArmed bool
	RetransmitIn    time.Duration
	ReadAt          time.Duration

	CAState      tcp.CAState
	Retransmits  uint8
	Backoff      uint8
	Probes       uint8
	RTO          time.Duration
	SRTT         time.Duration
	Unacked      uint32
	Retrans      uint32
	TotalRetrans uint32
	LastAckRecv  time.Duration
	Settings     tcp.Settings
	RTOMax       time.Duration
}

// Snapshot lists the TCP sockets that hold a connection or listen (not
// TIME_WAIT or request sockets) of every network
// namespace with a process in it or a name under /var/run/netns; onlyNetNS
// limits it to one.
func Snapshot(onlyNetNS uint32) ([]Socket, error) {
	spaces, err := namespaces()
	if err != nil {
		return nil, err
	}
	holders := owners.Scan("/proc")
	var out []Socket
	var errs []error
	for inode, path := range spaces {
		if onlyNetNS != 0 && inode != onlyNetNS {
			continue
		}
		socks, err := snapshotNetNS(inode, path)
		if err != nil {
			errs = append(errs, fmt.Errorf("netns %d: %w", inode, err))
			continue
		}
		for i := range socks {
			if o, ok := holders[socks[i].Inode]; ok && socks[i].Inode != 0 {
				socks[i].PID, socks[i].Comm = o.PID, o.Comm
			}
		}
		out = append(out, socks...)
	}
	return out, errors.Join(errs...)
}

// Namespaces maps every reachable network namespace inode (one with a
// process in it or a name under /var/run/netns) to a path that opens it.
func Namespaces() (map[uint32]string, error) { return namespaces() }

// namespaces maps every reachable network namespace inode to a path that
// opens it.
func namespaces() (map[uint32]string, error) {
	spaces := map[uint32]string{}
	add := func(path string) {
		// A name under /var/run/netns whose bind mount is gone (ip netns
		// after a crash, a namespace held in another mount namespace) is
		// an empty file, not a namespace: it has nothing to enter.
		var fs unix.Statfs_t
		if unix.Statfs(path, &fs) != nil || fs.Type != unix.NSFS_MAGIC {
			return
		}
		var st unix.Stat_t
		if unix.Stat(path, &st) == nil {
			if _, ok := spaces[uint32(st.Ino)]; !ok {
				spaces[uint32(st.Ino)] = path
			}
		}
	}
	add("/proc/self/ns/net")
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err == nil {
			add(filepath.Join("/proc", p.Name(), "ns/net"))
		}
	}
	if named, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, n := range named {
			add(filepath.Join("/var/run/netns", n.Name()))
		}
	}
	return spaces, nil
}

const (
	timerRetransmit = 1 // idiag_timer: the retransmission (or loss probe) timer is pending
	timerKeepalive  = 2 // idiag_timer: the keepalive timer is pending
	afInet          = syscall.AF_INET
	afInet6         = syscall.AF_INET6
)

func snapshotNetNS(inode uint32, path string) ([]Socket, error) {
	fd, err := diagSocketIn(path)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	settings, rtoMax := readSettings(path)
	var out []Socket
	for _, family := range []uint8{afInet, afInet6} {
		var now unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &now)
		socks, err := dumpTCP(fd, family)
		if err != nil {
			return nil, err
		}
		for _, d := range socks {
			s := Socket{
				Cookie:       d.cookie,
				NetNS:        inode,
				Local:        d.local,
				Remote:       d.remote,
				State:        tcp.State(d.state),
				Inode:        d.inode,
				KeepaliveOn:  d.timer == timerKeepalive,
				TimerExpires: time.Duration(d.expires) * time.Millisecond,
				Settings:     settings,
				RTOMax:       rtoMax,
				ReadAt:       time.Duration(now.Nano()),
			}
			s.Settings.KeepaliveOn = s.KeepaliveOn
			if d.timer == timerRetransmit {
				s.RetransmitArmed, s.RetransmitIn = true, s.TimerExpires
			}
			if ti := d.tcpInfo; ti != nil {
				s.CAState = tcp.CAState(ti.Ca_state)
				s.Retransmits = ti.Retransmits
				s.Backoff = ti.Backoff
				s.Probes = ti.Probes
				s.RTO = time.Duration(ti.Rto) * time.Microsecond
				s.SRTT = time.Duration(ti.Rtt) * time.Microsecond
				s.Unacked = ti.Unacked
				s.Retrans = ti.Retrans
				s.TotalRetrans = ti.Total_retrans
				s.LastAckRecv = time.Duration(ti.Last_ack_recv) * time.Millisecond
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// diagSocketIn opens a sock_diag socket in the namespace at path: a
// netlink socket answers for the namespace it was created in.
func diagSocketIn(path string) (int, error) { return diagSocketAnd(path, nil) }

// diagSocketAnd is diagSocketIn that also runs also, when set, in the
// namespace (one trip into it for both).
func diagSocketAnd(path string, also func()) (int, error) {
	fd := -1
	err := netnsexec.Do(path, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return fmt.Errorf("sock_diag socket: %w", err)
		}
		if also != nil {
			also()
		}
		return nil
	})
	return fd, err
}

// readSettings reads a namespace's TCP sysctls; sock_diag does not report
// the per-socket overrides, so these are the defaults its sockets use.
func readSettings(nsPath string) (tcp.Settings, time.Duration) {
	var s tcp.Settings
	rtoMax := tcp.RTOMaxDefault
	_ = netnsexec.Do(nsPath, func() error {
		read := func(name string) int {
			b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
			if err != nil {
				return 0
			}
			v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return v
		}
		s.Retries2 = uint8(read("tcp_retries2"))
		s.SynRetries = uint8(read("tcp_syn_retries"))
		s.KeepaliveTime = time.Duration(read("tcp_keepalive_time")) * time.Second
		s.KeepaliveIntvl = time.Duration(read("tcp_keepalive_intvl")) * time.Second
		s.KeepaliveProbes = uint8(read("tcp_keepalive_probes"))
		s.OrphanRetries = uint8(read("tcp_orphan_retries"))
		s.SynLinearTimeouts = uint8(read("tcp_syn_linear_timeouts"))
		if ms := read("tcp_rto_max_ms"); ms > 0 {
			rtoMax = time.Duration(ms) * time.Millisecond
		}
		return nil
	})
	return s, rtoMax
}

// InTrouble says whether the connection is already in an outage: RTO
// retransmissions or unanswered keepalive probes (an incident's shared
// fate counts the idle connections that are not).
func (s *Socket) InTrouble() bool {
	return (s.CAState == tcp.CALoss && s.Retransmits > 0) || (s.KeepaliveOn && s.Probes > 0)
}
