package incident

import (
	"slices"
	"sync"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/sockdiag"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// SharedFateSource says where ReadSharedFate's figures come from: sock_diag
// shows which timer a socket has pending and when it fires, not the
// socket's own keepalive interval and count, so the namespace's are used.
const SharedFateSource = "sock_diag: keepalive timer expiry per socket; tcp_keepalive_intvl and tcp_keepalive_probes of the namespace (per-socket overrides not visible)"

// SharedFateSourceOwn is the source when SharedFateReader.Keepalive gave
// each socket's own keepalive interval and count (Go sets 15 s and 9 on
// the socket, the namespace says 75 s).
const SharedFateSourceOwn = "sock_diag: keepalive timer expiry per socket; each socket's own keepalive interval and count (BPF socket iterator), the namespace's where it could not be read"

// SocketKeepalive is a socket's own keepalive interval and probe count.
type SocketKeepalive struct {
	Intvl  time.Duration
	Probes uint8
}

// ReadSharedFate fills inc.SharedFate from the kernel's socket table: the
// connections to the incident's peer (and port, if one is shared) in its
// namespace that are idle (ESTABLISHED, nothing in flight, not in
// trouble) and not in the incident (follows says which are). It only
// reads. A table that cannot be read leaves SharedFate nil.
func ReadSharedFate(inc *Incident, follows func(netns uint32, cookie uint64) bool) {
	(&SharedFateReader{}).Read(inc, follows)
}

// SharedFateReader reads shared fates (Read from one goroutine at a time),
// reusing a namespace's socket table for a second: incidents with many
// peers at once (a node losing a rack) cost one sock_diag dump and one
// /proc scan, not one per peer.
//
// Only a namespace's first table is read on the caller's goroutine, the
// engine's reading loop: an older one is used as it is while a goroutine
// of the reader's own reads the next. A reading is a sock_diag dump, the
// /proc scan that names the owners and, with Keepalive, a socket
// iterator in the namespace: tens of milliseconds on a busy host, once a
// second while incidents are open, during which the loop would not read
// the ring (under a churn with failures, about a tenth of tcpwatch's CPU
// was this reading on the loop).
type SharedFateReader struct {
	// Keepalive, if set, reads each socket's own keepalive settings in a
	// namespace, by socket cookie (sock_diag does not show them).
	Keepalive func(netns uint32) (map[uint64]SocketKeepalive, error)
	// snapshot reads a namespace's socket table (sockdiag.Snapshot; tests
	// replace it).
	snapshot func(netns uint32) ([]sockdiag.Socket, error)

	mu      sync.Mutex
	tables  map[uint32]sharedFateTable
	reading map[uint32]bool // namespaces whose next table is being read
}

type sharedFateTable struct {
	at    time.Time // when the table was read: its timers count from then
	socks []sockdiag.Socket
	own   map[uint64]SocketKeepalive
}

// sharedFateReuse is how long a namespace's socket table is used before
// the next is read. A table older than sharedFateStale (no incident there
// for a while, or one whose records are 10 s apart) is not used while the
// next is read: the record waits for a fresh one, as the first does.
const (
	sharedFateReuse = time.Second
	sharedFateStale = 2 * time.Second
)

// Read is ReadSharedFate through the reader's tables.
func (r *SharedFateReader) Read(inc *Incident, follows func(netns uint32, cookie uint64) bool) {
	ns := inc.NetNS
	r.mu.Lock()
	t, ok := r.tables[ns]
	if ok && time.Since(t.at) > sharedFateStale {
		ok = false
	}
	if ok && time.Since(t.at) > sharedFateReuse && !r.reading[ns] {
		if r.reading == nil {
			r.reading = map[uint32]bool{}
		}
		r.reading[ns] = true
		go r.refresh(ns)
	}
	r.mu.Unlock()
	if !ok {
		// The namespace's first incident, or a stale table: the record
		// waits for a table.
		if t, ok = r.read(ns); !ok {
			return
		}
		r.store(ns, t)
	}
	inc.SharedFate = sharedFateOf(inc, t.socks, t.own, follows, t.at)
}

// refresh reads a namespace's next table off the caller's goroutine. A
// namespace that cannot be read any more (gone) loses its table: the
// next incident there reads again, and tells no shared fate if it fails.
func (r *SharedFateReader) refresh(ns uint32) {
	t, ok := r.read(ns)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.reading, ns)
	if !ok {
		delete(r.tables, ns)
		return
	}
	r.storeLocked(ns, t)
}

func (r *SharedFateReader) read(ns uint32) (sharedFateTable, bool) {
	snapshot := r.snapshot
	if snapshot == nil {
		snapshot = sockdiag.Snapshot
	}
	at := time.Now()
	socks, err := snapshot(ns)
	if err != nil && len(socks) == 0 {
		return sharedFateTable{}, false
	}
	t := sharedFateTable{at: at, socks: socks}
	if r.Keepalive != nil {
		// Unread (an error): the namespace's settings, as before.
		t.own, _ = r.Keepalive(ns)
	}
	return t, true
}

func (r *SharedFateReader) store(ns uint32, t sharedFateTable) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.storeLocked(ns, t)
}

func (r *SharedFateReader) storeLocked(ns uint32, t sharedFateTable) {
	if r.tables == nil || len(r.tables) > 64 {
		r.tables = map[uint32]sharedFateTable{}
	}
	r.tables[ns] = t
}

func sharedFateOf(inc *Incident, socks []sockdiag.Socket, own map[uint64]SocketKeepalive, follows func(uint32, uint64) bool, now time.Time) *SharedFate {
	sf := &SharedFate{Source: SharedFateSource}
	if own != nil {
		sf.Source = SharedFateSourceOwn
	}
	owners := map[uint32]*Owner{}
	for i := range socks {
		s := &socks[i]
		if s.NetNS != inc.NetNS || s.State != tcp.StateEstablished || s.Remote.Addr().Unmap() != inc.Peer ||
			inc.Port != 0 && s.Remote.Port() != inc.Port || s.Unacked != 0 || s.InTrouble() || follows(s.NetNS, s.Cookie) {
			continue
		}
		sf.Idle++
		o := owners[s.PID]
		if o == nil {
			o = &Owner{PID: s.PID, Comm: s.Comm}
			owners[s.PID] = o
		}
		o.Connections++
		if !s.KeepaliveOn {
			sf.Never++
			continue
		}
		sf.Keepalive++
		probes, intvl := s.Settings.KeepaliveProbes, s.Settings.KeepaliveIntvl
		if ka, ok := own[s.Cookie]; ok && ka.Intvl > 0 {
			probes, intvl = ka.Probes, ka.Intvl
		}
		sf.KeepaliveProbes, sf.KeepaliveIntvl = probes, intvl
		// The first probe goes when the timer fires; the kernel gives up
		// one interval after the last unanswered probe.
		at := now.Add(s.TimerExpires + time.Duration(probes)*intvl)
		if sf.NoticeFirst.IsZero() || at.Before(sf.NoticeFirst) {
			sf.NoticeFirst = at
		}
		if at.After(sf.NoticeLast) {
			sf.NoticeLast = at
		}
	}
	for _, o := range owners {
		sf.Owners = append(sf.Owners, *o)
	}
	slices.SortFunc(sf.Owners, func(a, b Owner) int {
		if a.Connections != b.Connections {
			return b.Connections - a.Connections
		}
		return int(a.PID) - int(b.PID)
	})
	return sf
}
