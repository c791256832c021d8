package incident

import (
	"slices"
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

// SharedFateReader reads shared fates (one goroutine at a time), reusing a namespace's socket table
// for a second: incidents with many peers at once (a node losing a rack)
// cost one sock_diag dump and one /proc scan, not one per peer.
type SharedFateReader struct {
	// Keepalive, if set, reads each socket's own keepalive settings in a
	// namespace, by socket cookie (sock_diag does not show them).
	Keepalive func(netns uint32) (map[uint64]SocketKeepalive, error)
	tables    map[uint32]sharedFateTable
}

type sharedFateTable struct {
	at    time.Time
	socks []sockdiag.Socket
	own   map[uint64]SocketKeepalive
}

// sharedFateReuse is how long a namespace's socket table is reused.
const sharedFateReuse = time.Second

// Read is ReadSharedFate through the reader's tables.
func (r *SharedFateReader) Read(inc *Incident, follows func(netns uint32, cookie uint64) bool) {
	now := time.Now()
	t, ok := r.tables[inc.NetNS]
	if !ok || now.Sub(t.at) > sharedFateReuse {
		socks, err := sockdiag.Snapshot(inc.NetNS)
		if err != nil && len(socks) == 0 {
			return
		}
		if r.tables == nil || len(r.tables) > 64 {
			r.tables = map[uint32]sharedFateTable{}
		}
		t = sharedFateTable{at: now, socks: socks}
		if r.Keepalive != nil {
			// Unread (an error): the namespace's settings, as before.
			t.own, _ = r.Keepalive(inc.NetNS)
		}
		r.tables[inc.NetNS] = t
	}
	inc.SharedFate = sharedFateOf(inc, t.socks, t.own, follows, now)
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
