package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A sock_diag dump of TCP sockets in the states that can hold a connection
// worth tracking. The request's state mask keeps TIME_WAIT and request
// sockets out in the kernel: a busy server has hundreds of thousands of
// them, and none has an owner or a story.

// trackedStates are the TCP states a dump asks for (bit n = state n).
const trackedStates = 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<5 | 1<<8 | 1<<9 | 1<<10 | 1<<11 // ESTABLISHED..FIN_WAIT2, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING

const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	inetDiagInfo     = 2  // INET_DIAG_INFO: struct tcp_info
	sizeofDiagReq    = 56 // struct inet_diag_req_v2
	sizeofDiagMsg    = 72 // struct inet_diag_msg
)

// diagSocket is one inet_diag_msg with its tcp_info.
type diagSocket struct {
	family  uint8
	state   uint8
	timer   uint8
	expires uint32 // ms left on the pending timer
	local   netip.AddrPort
	remote  netip.AddrPort
	cookie  uint64
	inode   uint32
	tcpInfo *unix.TCPInfo
}

// dumpTCP lists family's TCP sockets through fd, a NETLINK_SOCK_DIAG socket
// opened in the namespace to list.
func dumpTCP(fd int, family uint8) ([]diagSocket, error) {
	var out []diagSocket
	err := walkTCP(fd, family, trackedStates, 1<<(inetDiagInfo-1), func(s *diagSocket) { out = append(out, *s) })
	return out, err
}

// walkTCP calls fn for each of family's TCP sockets in the states of the
// mask, asking for the inet_diag extensions of ext (bit n-1 for INET_DIAG
// attribute n; 0 for the bare sockets). fn must not keep s.
func walkTCP(fd int, family uint8, states uint32, ext uint8, fn func(s *diagSocket)) error {
	return walkRaw(fd, family, states, ext, func(s *diagSocket, _ []byte) { fn(s) })
}

// walkRaw is walkTCP that also hands fn the raw inet_diag_msg and its
// attributes (valid only during the call).
func walkRaw(fd int, family uint8, states uint32, ext uint8, fn func(s *diagSocket, raw []byte)) error {
	req := make([]byte, unix.NLMSG_HDRLEN+sizeofDiagReq)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	body := req[unix.NLMSG_HDRLEN:]
	body[0] = family
	body[1] = unix.IPPROTO_TCP
	body[2] = ext
	binary.NativeEndian.PutUint32(body[4:], states)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
					}
				}
				return nil
			case sockDiagByFamily:
				s, err := parseDiagMsg(m.Data)
				if err != nil {
					return err
				}
				fn(&s, m.Data)
			}
		}
	}
}

func parseDiagMsg(b []byte) (diagSocket, error) {
	if len(b) < sizeofDiagMsg {
		return diagSocket{}, errors.New("sock_diag: short inet_diag_msg")
	}
	s := diagSocket{family: b[0], state: b[1], timer: b[2], expires: binary.NativeEndian.Uint32(b[52:])}
	id := b[4:52] // struct inet_diag_sockid
	sport, dport := binary.BigEndian.Uint16(id[0:]), binary.BigEndian.Uint16(id[2:])
	src, dst := id[4:20], id[20:36]
	if s.family == unix.AF_INET {
		src, dst = src[:4], dst[:4]
	}
	la, _ := netip.AddrFromSlice(src)
	ra, _ := netip.AddrFromSlice(dst)
	s.local = netip.AddrPortFrom(la.Unmap(), sport)
	s.remote = netip.AddrPortFrom(ra.Unmap(), dport)
	s.cookie = uint64(binary.NativeEndian.Uint32(id[40:])) | uint64(binary.NativeEndian.Uint32(id[44:]))<<32
	s.inode = binary.NativeEndian.Uint32(b[68:])
	for attrs := b[sizeofDiagMsg:]; len(attrs) >= unix.SizeofRtAttr; {
		l := int(binary.NativeEndian.Uint16(attrs[0:]))
		typ := binary.NativeEndian.Uint16(attrs[2:])
		if l < unix.SizeofRtAttr || l > len(attrs) {
			break
		}
		if typ == inetDiagInfo {
			// tcp_info grows across kernels: copy what both sides know.
			var ti unix.TCPInfo
			payload := attrs[unix.SizeofRtAttr:l]
			n := min(len(payload), int(unsafe.Sizeof(ti)))
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ti)), unsafe.Sizeof(ti)), payload[:n])
			s.tcpInfo = &ti
		}
		adv := (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if adv > len(attrs) {
			break
		}
		attrs = attrs[adv:]
	}
	return s, nil
}
