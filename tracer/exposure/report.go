package exposure

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// Peer is the other side as an operator names it: the service a client
// connects to (remote address and port), or, for connections accepted by
// a local listener, the client's address and the local service port.
type Peer struct {
	Addr    netip.Addr
	Port    uint16 // the service port: the remote one, or the local one when Inbound
	Inbound bool   // accepted by a listener on Port
}

// Connection is one assessed socket of a report.
type Connection struct {
	*Socket
	Peer       Peer
	Assessment Assessment
}

// Group is connections of one process to one peer with the same settings
// and state, so one sentence tells them all.
type Group struct {
	Connections []*Connection
	IdleMin     time.Duration
	IdleMax     time.Duration
}

// First is the group's representative: every member has its owner, peer,
// state, settings and assessment.
func (g *Group) First() *Connection { return g.Connections[0] }

// Tally counts connections by class (indexed by Class).
type Tally [4]int

// Total is every connection counted.
func (t Tally) Total() int { return t[0] + t[1] + t[2] + t[3] }

// ProcessTally is one process's connections by class.
type ProcessTally struct {
	PID       uint32
	Comm      string
	Container string
	Tally     Tally
}

// PeerTally is one peer's connections by class.
type PeerTally struct {
	Peer  Peer
	Tally Tally
}

// Report is a snapshot, assessed and grouped, worst first.
type Report struct {
	Connections []*Connection // assessed connections, worst first
	Groups      []*Group      // worst class first, then the largest
	ByProcess   []ProcessTally
	ByPeer      []PeerTally
	Tally       Tally
	// TimeWait counts the sockets in TIME_WAIT, Listening the listeners;
	// Skipped the sockets in other states (handshakes, request sockets).
	TimeWait, Listening, Skipped int
	Namespaces                   int
}

// Build assesses every socket of a snapshot and groups the connections.
// The sockets' listeners tell which connections were accepted.
func Build(socks []Socket) *Report {
	r := &Report{}
	type listenKey struct {
		netns uint32
		port  uint16
	}
	listening := map[listenKey]bool{}
	spaces := map[uint32]bool{}
	for i := range socks {
		s := &socks[i]
		spaces[s.NetNS] = true
		switch {
		case s.State == tcpListen:
			listening[listenKey{s.NetNS, s.Local.Port()}] = true
			r.Listening++
		case s.State == tcpTimeWait:
			r.TimeWait++
		case !Assessed(s.State):
			r.Skipped++
		}
	}
	r.Namespaces = len(spaces)
	for i := range socks {
		s := &socks[i]
		if !Assessed(s.State) {
			continue
		}
		c := &Connection{Socket: s, Assessment: Assess(s)}
		c.Peer = Peer{Addr: s.Remote.Addr(), Port: s.Remote.Port()}
		if listening[listenKey{s.NetNS, s.Local.Port()}] {
			c.Peer = Peer{Addr: s.Remote.Addr(), Port: s.Local.Port(), Inbound: true}
		}
		r.Connections = append(r.Connections, c)
		r.Tally[c.Assessment.Class]++
	}
	slices.SortStableFunc(r.Connections, func(a, b *Connection) int {
		return cmp.Or(
			cmp.Compare(b.Assessment.Class, a.Assessment.Class),
			cmp.Compare(a.Comm, b.Comm),
			cmp.Compare(a.PID, b.PID),
			a.Peer.Addr.Compare(b.Peer.Addr),
			cmp.Compare(a.Peer.Port, b.Peer.Port),
			a.Local.Compare(b.Local),
		)
	})
	r.group()
	r.tallies()
	return r
}

type groupKey struct {
	pid       uint32
	comm      string
	container string
	netns     uint32
	peer      Peer
	state     uint8
	orphan    bool
	settings  Settings
	a         Assessment
}

func (r *Report) group() {
	byKey := map[groupKey]*Group{}
	for _, c := range r.Connections {
		k := groupKey{c.PID, c.Comm, c.Container.ID, c.NetNS, c.Peer, uint8(c.State), c.Orphan, c.Settings, c.Assessment}
		g := byKey[k]
		if g == nil {
			g = &Group{IdleMin: c.Idle, IdleMax: c.Idle}
			byKey[k] = g
			r.Groups = append(r.Groups, g)
		}
		g.Connections = append(g.Connections, c)
		g.IdleMin, g.IdleMax = min(g.IdleMin, c.Idle), max(g.IdleMax, c.Idle)
	}
	slices.SortStableFunc(r.Groups, func(a, b *Group) int {
		return cmp.Or(
			cmp.Compare(b.First().Assessment.Class, a.First().Assessment.Class),
			cmp.Compare(len(b.Connections), len(a.Connections)),
		)
	})
}

func (r *Report) tallies() {
	type pk struct {
		pid        uint32
		comm, cont string
	}
	procs := map[pk]*ProcessTally{}
	peers := map[Peer]*PeerTally{}
	for _, c := range r.Connections {
		k := pk{c.PID, c.Comm, c.Container.Short()}
		p := procs[k]
		if p == nil {
			p = &ProcessTally{PID: c.PID, Comm: c.Comm, Container: k.cont}
			procs[k] = p
		}
		p.Tally[c.Assessment.Class]++
		q := peers[c.Peer]
		if q == nil {
			q = &PeerTally{Peer: c.Peer}
			peers[c.Peer] = q
		}
		q.Tally[c.Assessment.Class]++
	}
	for _, p := range procs {
		r.ByProcess = append(r.ByProcess, *p)
	}
	for _, p := range peers {
		r.ByPeer = append(r.ByPeer, *p)
	}
	worse := func(a, b Tally) int {
		for _, c := range Classes {
			if n := cmp.Compare(b[c], a[c]); n != 0 {
				return n
			}
		}
		return 0
	}
	slices.SortFunc(r.ByProcess, func(a, b ProcessTally) int {
		return cmp.Or(worse(a.Tally, b.Tally), cmp.Compare(a.Comm, b.Comm), cmp.Compare(a.PID, b.PID))
	})
	slices.SortFunc(r.ByPeer, func(a, b PeerTally) int {
		return cmp.Or(worse(a.Tally, b.Tally), a.Peer.Addr.Compare(b.Peer.Addr), cmp.Compare(a.Peer.Port, b.Peer.Port))
	})
}
