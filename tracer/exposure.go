package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime/debug"
	"slices"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/bpf"
	"github.com/tcpwatch/tcpwatch/internal/netnsexec"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/exposure"
	"github.com/tcpwatch/tcpwatch/tracer/owners"
	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// SocketReader reads every TCP socket of a network namespace, with the
// settings the socket itself holds, through a BPF TCP socket iterator
// (iter/tcp, bpf/exposure.bpf.c). sock_diag cannot give these: it reports
// neither TCP_KEEPIDLE/KEEPINTVL/KEEPCNT nor TCP_USER_TIMEOUT. The
// iterator runs only when read; loading it attaches nothing to any path
// the kernel takes for traffic.
type SocketReader struct {
	objs bpf.ExposureObjects
	iter *link.Iter
	hz   uint32
}

// OpenSocketReader loads and attaches the iterator. With connectionsOnly
// it skips the sockets that hold no connection's settings (TIME_WAIT and
// request sockets), which only a full report counts. It changes nothing.
func OpenSocketReader(connectionsOnly bool) (*SocketReader, error) {
	return OpenSocketReaderWith(SocketReaderOptions{ConnectionsOnly: connectionsOnly})
}

// SocketReaderOptions tune the iterator.
type SocketReaderOptions struct {
	// ConnectionsOnly: see OpenSocketReader.
	ConnectionsOnly bool
	// MarkCloseWait, with a tracer (watch mode): each read notes in the
	// tracer's socket storage when a socket was first read in CLOSE_WAIT,
	// and marks one still there CloseWaitAfter later notable, so that the
	// kernel half sends its end; its row says so (Socket.CloseWaitStuck).
	MarkCloseWait  *Tracer
	CloseWaitAfter time.Duration
}

// OpenSocketReaderWith is OpenSocketReader with every option.
func OpenSocketReaderWith(opt SocketReaderOptions) (*SocketReader, error) {
	connectionsOnly := opt.ConnectionsOnly
	if err := CheckPrivileges(); err != nil {
		return nil, err
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return nil, err
	}
	hz, _, err := kernelHZ(unix.ByteSliceToString(uts.Release[:]))
	if err != nil {
		return nil, err
	}
	r := &SocketReader{hz: hz}
	spec, err := bpf.LoadExposure()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded socket iterator: %w", err)
	}
	if connectionsOnly {
		if err := spec.Variables[bpf.ExposureVarConnectionsOnly].Set(uint8(1)); err != nil {
			return nil, err
		}
	}
	var load *ebpf.CollectionOptions
	if t := opt.MarkCloseWait; t != nil && opt.CloseWaitAfter > 0 {
		store := t.coll.Maps[bpf.TcpwatchMapSockInfos]
		if store == nil {
			return nil, fmt.Errorf("the kernel half has no %s map", bpf.TcpwatchMapSockInfos)
		}
		if err := spec.Variables[bpf.ExposureVarCloseWaitAfterNs].Set(uint64(opt.CloseWaitAfter)); err != nil {
			return nil, err
		}
		counters := t.coll.Maps[bpf.TcpwatchMapCounters]
		if counters == nil {
			return nil, fmt.Errorf("the kernel half has no %s map", bpf.TcpwatchMapCounters)
		}
		// A storage the scan cannot make is counted with the kernel half's skips.
		load = &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{bpf.ExposureMapSockInfos: store,
			bpf.ExposureMapCounters: counters}}
	}
	if err := spec.LoadAndAssign(&r.objs, load); err != nil {
		return nil, fmt.Errorf("loading the socket iterator (BPF iterators need Linux 5.9 and BTF): %w", loadError(err))
	}
	r.iter, err = link.AttachIter(link.IterOptions{Program: r.objs.TwExposure})
	if err != nil {
		r.objs.Close()
		return nil, fmt.Errorf("attaching the TCP socket iterator: %w", err)
	}
	// The kernel's types were needed for the load only (CO-RE): hand
	// their memory back, or in watch mode they nearly double tcpwatch's
	// resident memory (measured: 28.7 MB without the iterator, 55 MB with).
	debug.FreeOSMemory()
	return r, nil
}

// Close detaches and unloads the iterator.
func (r *SocketReader) Close() error {
	if r == nil {
		return nil
	}
	err := r.iter.Close()
	return errors.Join(err, r.objs.Close())
}

var rowSize = int(unsafe.Sizeof(bpf.ExposureTwSockRow{}))

// Read returns every TCP socket of every network namespace tcpwatch can
// reach (onlyNetNS, if not 0, limits it to one), owners not yet resolved.
// A TCP iterator walks the sockets of the namespace of the task that
// opens it, so it is opened once inside each namespace.
func (r *SocketReader) Read(onlyNetNS uint32) ([]exposure.Socket, error) {
	spaces, err := sockdiag.Namespaces()
	if err != nil {
		return nil, err
	}
	inodes := make([]uint32, 0, len(spaces))
	for ino := range spaces {
		if onlyNetNS == 0 || ino == onlyNetNS {
			inodes = append(inodes, ino)
		}
	}
	if onlyNetNS != 0 && len(inodes) == 0 {
		return nil, fmt.Errorf("no network namespace %d (none of /proc/*/ns/net or /var/run/netns is it)", onlyNetNS)
	}
	slices.Sort(inodes)
	var out []exposure.Socket
	var errs []error
	for _, ino := range inodes {
		var rd io.ReadCloser
		err := netnsexec.Do(spaces[ino], func() error {
			var err error
			rd, err = r.iter.Open()
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("netns %d: %w", ino, err))
			continue
		}
		// Row by row: a busy host has hundreds of thousands of sockets.
		var row bpf.ExposureTwSockRow
		buf := unsafe.Slice((*byte)(unsafe.Pointer(&row)), rowSize)
		br := bufio.NewReaderSize(rd, 64<<10)
		for {
			if _, err = io.ReadFull(br, buf); err != nil {
				break
			}
			out = append(out, r.socket(&row))
		}
		rd.Close()
		if err != io.EOF {
			errs = append(errs, fmt.Errorf("netns %d: reading the socket iterator: %w", ino, err))
		}
	}
	return out, errors.Join(errs...)
}

func (r *SocketReader) jiffies(j uint32) time.Duration {
	return time.Duration(uint64(j)) * time.Second / time.Duration(r.hz)
}

// socket turns a row into what tracer/exposure assesses: jiffies into
// durations, the socket's 0 ("use the sysctl") into the sysctl's value
// with its source.
func (r *SocketReader) socket(row *bpf.ExposureTwSockRow) exposure.Socket {
	s := exposure.Socket{
		Cookie:   row.Cookie,
		NetNS:    row.Netns,
		State:    tcp.State(row.State),
		Inode:    row.Inode,
		UID:      row.Uid,
		CgroupID: row.CgroupId,
		Orphan:   row.Flags&uint16(bpf.ExposureTwRowFlagTW_ROW_ORPHAN) != 0,

		CloseWaitStuck: row.Flags&uint16(bpf.ExposureTwRowFlagTW_ROW_CLOSE_WAIT_STUCK) != 0,
		CloseWaitFor:   time.Duration(row.CloseWaitMs) * time.Millisecond,
	}
	if row.Family == unix.AF_INET6 {
		s.Local = netip.AddrPortFrom(netip.AddrFrom16(row.Saddr).Unmap(), row.Sport)
		s.Remote = netip.AddrPortFrom(netip.AddrFrom16(row.Daddr).Unmap(), row.Dport)
	} else {
		s.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(row.Saddr[:4])), row.Sport)
		s.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte(row.Daddr[:4])), row.Dport)
	}
	st := &s.Settings
	st.Retries2 = row.NetRetries2
	st.OrphanRetries = row.NetOrphanRetries
	st.NetKeepaliveIdle = r.jiffies(row.NetKeepaliveTime)
	st.NetKeepaliveIntvl = r.jiffies(row.NetKeepaliveIntvl)
	st.NetKeepaliveCount = row.NetKeepaliveProbes
	if row.Flags&uint16(bpf.ExposureTwRowFlagTW_ROW_FULL) == 0 {
		return s // TIME_WAIT or a request socket: no tcp_sock to read
	}
	st.Keepalive = row.Flags&uint16(bpf.ExposureTwRowFlagTW_ROW_KEEPALIVE) != 0
	pick := func(own, net uint32) (time.Duration, exposure.Source) {
		if own != 0 {
			return r.jiffies(own), exposure.FromSocket
		}
		return r.jiffies(net), exposure.FromSysctl
	}
	st.KeepaliveIdle, st.KeepaliveIdleFrom = pick(row.SkKeepaliveTime, row.NetKeepaliveTime)
	st.KeepaliveIntvl, st.KeepaliveIntvlFrom = pick(row.SkKeepaliveIntvl, row.NetKeepaliveIntvl)
	st.KeepaliveCount, st.KeepaliveCountFrom = row.NetKeepaliveProbes, exposure.FromSysctl
	if row.SkKeepaliveProbes != 0 {
		st.KeepaliveCount, st.KeepaliveCountFrom = row.SkKeepaliveProbes, exposure.FromSocket
	}
	st.UserTimeout = time.Duration(row.UserTimeoutMs) * time.Millisecond
	if row.Flags&uint16(bpf.ExposureTwRowFlagTW_ROW_RTO_MIN) != 0 {
		st.RTOMin = r.jiffies(row.RtoMin)
	}
	// tcp_model_timeout() caps the RTO at the socket's icsk_rto_max
	// (6.15+, from tcp_rto_max_ms or TCP_RTO_MAX_MS), else TCP_RTO_MAX.
	st.RTOMax, st.RTOMaxFrom = tcp.RTOMaxDefault, exposure.FromKernel
	if row.Flags&uint16(bpf.ExposureTwRowFlagTW_ROW_RTO_MAX) != 0 && row.RtoMax != 0 {
		st.RTOMax = r.jiffies(row.RtoMax)
		st.RTOMaxFrom = exposure.FromSocket
		if row.Flags&uint16(bpf.ExposureTwRowFlagTW_ROW_SYS_RTO_MAX) != 0 &&
			st.RTOMax == time.Duration(row.NetRtoMaxMs)*time.Millisecond {
			st.RTOMaxFrom = exposure.FromSysctl
		}
	}
	st.FinTimeout, st.FinTimeoutFrom = r.jiffies(row.NetFinTimeout), exposure.FromSysctl
	if row.Linger2 != 0 {
		st.FinTimeout, st.FinTimeoutFrom = time.Duration(row.Linger2)*time.Second/time.Duration(r.hz), exposure.FromSocket
	}

	s.Idle = r.jiffies(row.Idle)
	s.SinceSend = r.jiffies(row.SinceSend)
	s.Unacked, s.Unsent, s.Unread = row.UnackedBytes, row.UnsentBytes, row.UnreadBytes
	s.PacketsOut = row.PacketsOut
	s.Retransmits, s.ProbesOut = row.Retransmits, row.ProbesOut
	s.RTO = r.jiffies(row.Rto)
	s.SRTT = time.Duration(row.SrttUs) * time.Microsecond
	return s
}

// ResolveOwners names the process holding each socket (its inode in
// /proc/PID/fd) and the container its cgroup names (cgroups may be nil).
func ResolveOwners(socks []exposure.Socket, cgroups *containers.Resolver) {
	holders := owners.Scan("/proc")
	for i := range socks {
		s := &socks[i]
		if o, ok := holders[s.Inode]; ok && s.Inode != 0 {
			s.PID, s.Comm = o.PID, o.Comm
		}
		if cgroups != nil && s.CgroupID != 0 {
			s.Container = cgroups.Lookup(s.CgroupID)
		}
	}
}
