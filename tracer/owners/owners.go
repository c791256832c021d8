// Package owners finds the process that holds a socket, by the socket's
// inode, the way ss -p does: reading the /proc/PID/fd links. It only reads
// /proc; it never opens, duplicates or otherwise touches another
// process's descriptors, so the sockets it looks at stay exactly as they
// were.
package owners

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Holder is the process holding a socket's descriptor (tracker.Owner adds how
// it was learned).
type Holder struct {
	PID  uint32
	Comm string
}

// Index maps socket inodes to their holders. A full scan of /proc costs
// milliseconds on a busy host, so the index is rebuilt only when asked for
// an inode it does not know, and at most once per MinRescan.
type Index struct {
	// ProcRoot is the proc file system to read ("/proc").
	ProcRoot string
	// MinRescan bounds how often a miss may trigger a new scan.
	MinRescan time.Duration

	mu       sync.Mutex
	byInode  map[uint32]Holder
	lastScan time.Time
}

// NewIndex returns an index over /proc that rescans at most every 200 ms.
func NewIndex() *Index {
	return &Index{ProcRoot: "/proc", MinRescan: 200 * time.Millisecond}
}

// Owner returns the process holding the socket with this inode. A socket
// held by several processes (a forked server) is named after the one with
// the highest pid: the most recently forked, the worker rather than the
// parent that accepted it.
func (x *Index) Owner(inode uint32) (pid uint32, comm string, ok bool) {
	if inode == 0 {
		return 0, "", false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if o, found := x.byInode[inode]; found && x.alive(o.PID) {
		return o.PID, o.Comm, true
	}
	if time.Since(x.lastScan) < x.MinRescan && x.byInode != nil {
		return 0, "", false
	}
	x.byInode = Scan(x.ProcRoot)
	x.lastScan = time.Now()
	o, found := x.byInode[inode]
	return o.PID, o.Comm, found
}

// Known answers from what the last scan saw, without scanning: for a
// socket no process holds any more (orphaned, destroyed), which no scan
// could find; the last scan may have seen its holder while it lived.
func (x *Index) Known(inode uint32) (pid uint32, comm string, ok bool) {
	if inode == 0 {
		return 0, "", false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if o, found := x.byInode[inode]; found && x.alive(o.PID) {
		return o.PID, o.Comm, true
	}
	return 0, "", false
}

func (x *Index) alive(pid uint32) bool {
	_, err := os.Stat(x.ProcRoot + "/" + strconv.FormatUint(uint64(pid), 10))
	return err == nil
}

// Scan reads every process's descriptors and maps socket inodes to the
// process holding them.
func Scan(procRoot string) map[uint32]Holder {
	out := map[uint32]Holder{}
	procs, err := os.ReadDir(procRoot)
	if err != nil {
		return out
	}
	for _, p := range procs {
		pid, err := strconv.ParseUint(p.Name(), 10, 32)
		if err != nil {
			continue
		}
		dir := procRoot + "/" + p.Name() + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		var comm string
		for _, fd := range fds {
			target, err := os.Readlink(dir + "/" + fd.Name())
			if err != nil {
				continue
			}
			ino, ok := socketInode(target)
			if !ok {
				continue
			}
			if prev, seen := out[ino]; seen && prev.PID > uint32(pid) {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(procRoot + "/" + p.Name() + "/comm")
				comm = strings.TrimSuffix(string(b), "\n")
			}
			out[ino] = Holder{PID: uint32(pid), Comm: comm}
		}
	}
	return out
}

// socketInode parses a descriptor link "socket:[12345]".
func socketInode(target string) (uint32, bool) {
	rest, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0, false
	}
	rest, ok = strings.CutSuffix(rest, "]")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(rest, 10, 32)
	return uint32(ino), err == nil
}
