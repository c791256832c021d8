package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// Table is what the kernel's TCP socket tables held at one moment, for the
// network namespaces asked about: enough to say whether a connection
// tcpwatch tracks still exists. It is read only, like Snapshot, and kept
// small (sorted numbers, no addresses): a busy host has hundreds of
// thousands of sockets.
type Table struct {
	cookies []uint64        // sorted socket cookies
	tuples  []uint64        // sorted TupleHash of each socket
	read    map[uint32]bool // namespaces whose tables were read
	unknown map[uint32]bool // namespaces that exist but could not be read
}

// liveStates are the states of a socket that still holds a connection: all
// of trackedStates but LISTEN. A socket in TIME_WAIT has lost its full
// socket (and its story is told); request sockets are not tracked.
const liveStates = trackedStates &^ (1 << 10)

// Live reads the socket tables of the namespaces given. One that cannot be
// read is reported in the error, and one that no process or name under
// /var/run/netns holds any more cannot be entered either: Has answers true
// for both (unknown is not gone). A namespace no one can name still exists
// while a socket holds it: the orphans of a killed container's or a lab
// host's processes go on retransmitting their FIN there for minutes, and
// dropping them as gone let their next retransmission start a second story
// after the final one (seen in the 7.3 guest).
func Live(namespaceInodes []uint32) (*Table, error) {
	t := &Table{read: map[uint32]bool{}, unknown: map[uint32]bool{}}
	if len(namespaceInodes) == 0 {
		return t, nil
	}
	spaces, err := namespaces()
	if err != nil {
		// Nothing is known: say so for every namespace asked about.
		for _, ns := range namespaceInodes {
			t.unknown[ns] = true
		}
		return t, err
	}
	var errs []error
	for _, inode := range namespaceInodes {
		path, ok := spaces[inode]
		if !ok {
			continue
		}
		if err := t.readNetNS(inode, path); err != nil {
			t.unknown[inode] = true
			errs = append(errs, fmt.Errorf("netns %d: %w", inode, err))
			continue
		}
		t.read[inode] = true
	}
	slices.Sort(t.cookies)
	slices.Sort(t.tuples)
	return t, errors.Join(errs...)
}

func (t *Table) readNetNS(inode uint32, path string) error {
	fd, err := diagSocketIn(path)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for _, family := range []uint8{afInet, afInet6} {
		err := walkTCP(fd, family, liveStates, 0, func(s *diagSocket) {
			t.cookies = append(t.cookies, s.cookie)
			t.tuples = append(t.tuples, TupleHash(inode, s.local, s.remote))
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Has says whether the kernel had the socket when the table was read: by
// cookie (unique across namespaces), or by 4-tuple when the cookie is not
// known. It answers true for a namespace that could not be read or found.
func (t *Table) Has(netnsInode uint32, cookie uint64, local, remote netip.AddrPort) bool {
	if t.unknown[netnsInode] || !t.read[netnsInode] {
		return true
	}
	if cookie != 0 {
		_, ok := slices.BinarySearch(t.cookies, cookie)
		return ok
	}
	_, ok := slices.BinarySearch(t.tuples, TupleHash(netnsInode, local, remote))
	return ok
}

// TupleHash condenses a connection's namespace and 4-tuple (IPv4-mapped
// addresses unmapped, as sock_diag reports them). A collision can only
// keep a dead connection, never drop a live one.
func TupleHash(netnsInode uint32, local, remote netip.AddrPort) uint64 {
	var b [4 + 2*18]byte
	binary.LittleEndian.PutUint32(b[0:], netnsInode)
	put := func(off int, ap netip.AddrPort) {
		a := ap.Addr().Unmap().As16()
		copy(b[off:], a[:])
		binary.LittleEndian.PutUint16(b[off+16:], ap.Port())
	}
	put(4, local)
	put(22, remote)
	h := fnv.New64a()
	h.Write(b[:])
	return h.Sum64()
}
