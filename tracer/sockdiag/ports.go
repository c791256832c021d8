package sockdiag

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/netnsexec"
)

// PortUse is what holds a namespace's local ports toward one destination:
// the question after connect() failed with EADDRNOTAVAIL.
type PortUse struct {
	TimeWait    int // sockets in TIME_WAIT to the destination
	Other       int // sockets in any other state to it
	TimeWaitAll int // sockets in TIME_WAIT to any destination
	RangeLo     int // net.ipv4.ip_local_port_range
	RangeHi     int
	TwReuse     int // net.ipv4.tcp_tw_reuse
}

const (
	stateTimeWait = 6
	allStates     = 0xfff // TCP_ESTABLISHED (1) .. TCP_NEW_SYN_RECV (12), bit n for state n
)

// PortsToward counts the sockets of namespace netns to dst, by TIME_WAIT
// or not, and reads the namespace's port range and tcp_tw_reuse.
func PortsToward(netns uint32, dst netip.AddrPort) (PortUse, error) {
	var u PortUse
	spaces, err := namespaces()
	if err != nil {
		return u, err
	}
	path, ok := spaces[netns]
	if !ok {
		return u, fmt.Errorf("netns %d: no process or name holds it", netns)
	}
	fd, err := diagSocketIn(path)
	if err != nil {
		return u, err
	}
	defer unix.Close(fd)
	family := uint8(afInet)
	if dst.Addr().Is6() && !dst.Addr().Is4In6() {
		family = afInet6
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	err = walkTCP(fd, family, allStates<<1, 0, func(s *diagSocket) {
		tw := s.state == stateTimeWait
		if tw {
			u.TimeWaitAll++
		}
		if netip.AddrPortFrom(s.remote.Addr().Unmap(), s.remote.Port()) != dst {
			return
		}
		if tw {
			u.TimeWait++
		} else {
			u.Other++
		}
	})
	if err != nil {
		return u, err
	}
	err = netnsexec.Do(path, func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
		if err != nil {
			return err
		}
		f := strings.Fields(string(b))
		if len(f) == 2 {
			u.RangeLo, _ = strconv.Atoi(f[0])
			u.RangeHi, _ = strconv.Atoi(f[1])
		}
		if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_tw_reuse"); err == nil {
			u.TwReuse, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		return nil
	})
	return u, err
}
