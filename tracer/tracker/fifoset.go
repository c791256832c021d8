package tracker

import (
	"hash/maphash"
	"time"
)

// fifoSet remembers keys in the order they came, each with a time, for a
// while and up to a bound: the 4-tuples in TIME_WAIT (timeWait). Under
// churn with --all it is at its bound of 65,536 keys, every connection
// adds one and drops one, and each new end looks one up it will mostly
// not find. As a Go map (and a time queue beside it) those lookups,
// inserts and deletes, with the destroyed cookies' (now gone.go), were a
// quarter of the tracker's work in the replay of a busy host's churn
// (BenchmarkReplayAll): a large map is a directory, a table and a group to
// reach, each a cache miss, a deleted key a tombstone that lengthens the
// probes of every miss after it, and the 4-tuples' keys held pointers
// (netip.Addr) that the collector scanned, map and queue, at every cycle.
//
// Here the keys sit in a ring in arrival order (the queue: the oldest is
// dropped first), found through an open-addressed index of ring positions
// (linear probing, at most half full, deletion by backward shift: no
// tombstones), neither holding a pointer. A key deleted before its turn
// leaves a dead slot in the ring, skipped when it reaches the front.
// Times are pushed almost always in order (records of two CPUs can be a
// few microseconds apart): a key pushed out of order leaves with the
// ones around it, a little late, never early.
type fifoSet[K comparable] struct {
	hash  func(K) uint64
	ring  []fifoEntry[K] // power-of-two length, grown up to maxRing
	head  int            // position of the oldest entry
	count int            // entries in the ring, dead ones included
	live  int            // entries not deleted
	// index holds each live key's ring position+1 (0: an empty slot) and
	// the low half of its hash, at twice the ring's length: a probe
	// compares hashes, and reads the ring (a cache miss of its own) only
	// for a key whose hash matches, and a backward shift finds a key's
	// home slot without reading it.
	index   []fifoSlot
	maxRing int
}

type fifoSlot struct{ pos, hash uint32 }

type fifoEntry[K comparable] struct {
	key  K
	at   time.Duration
	dead bool
}

// newFifoSet holds up to maxRing entries (a power of two), dead ones
// included; it starts small and grows.
func newFifoSet[K comparable](maxRing int, hash func(K) uint64) *fifoSet[K] {
	n := min(1024, maxRing)
	return &fifoSet[K]{hash: hash, ring: make([]fifoEntry[K], n), index: make([]fifoSlot, 2*n), maxRing: maxRing}
}

// Len is the number of live keys.
func (s *fifoSet[K]) Len() int { return s.live }

// Entries is the number of entries in the ring, dead ones included.
func (s *fifoSet[K]) Entries() int { return s.count }

// Full says whether a Push would need room first (PopFront).
func (s *fifoSet[K]) Full() bool { return s.count == s.maxRing }

// find returns the index slot of k, or -1.
func (s *fifoSet[K]) find(k K) int { return s.findHashed(k, uint32(s.hash(k))) }

// findHashed is find of a key whose hash is h (the hash of a 4-tuple is
// a fifth of a lookup's work: Set and Take compute it once).
func (s *fifoSet[K]) findHashed(k K, h uint32) int {
	mask := len(s.index) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		e := s.index[i]
		if e.pos == 0 {
			return -1
		}
		if e.hash == h && s.ring[e.pos-1].key == k {
			return i
		}
	}
}

// insert indexes ring position pos under hash h.
func (s *fifoSet[K]) insert(h uint32, pos int) {
	mask := len(s.index) - 1
	i := int(h) & mask
	for s.index[i].pos != 0 {
		i = (i + 1) & mask
	}
	s.index[i] = fifoSlot{pos: uint32(pos + 1), hash: h}
}

// Get returns the time k was pushed, if it is held.
func (s *fifoSet[K]) Get(k K) (time.Duration, bool) {
	i := s.find(k)
	if i < 0 {
		return 0, false
	}
	return s.ring[s.index[i].pos-1].at, true
}

// Has says whether k is held.
func (s *fifoSet[K]) Has(k K) bool { return s.find(k) >= 0 }

// Set holds k from at, as the newest entry: an older entry of k is
// deleted. The caller makes room first when Full.
func (s *fifoSet[K]) Set(k K, at time.Duration) {
	h := uint32(s.hash(k))
	if i := s.findHashed(k, h); i >= 0 {
		s.kill(i)
	}
	s.pushHashed(k, h, at)
}

// Push adds k from at as the newest entry, for a key that is not held
// (a socket's cookie, destroyed once). A key pushed twice is held until
// its later entry leaves, and Delete forgets only one of its entries.
// The caller makes room first when Full.
func (s *fifoSet[K]) Push(k K, at time.Duration) { s.pushHashed(k, uint32(s.hash(k)), at) }

func (s *fifoSet[K]) pushHashed(k K, h uint32, at time.Duration) {
	if s.count == len(s.ring) {
		if len(s.ring) >= s.maxRing {
			panic("tracker: fifoSet.Push on a full set")
		}
		s.grow()
	}
	pos := (s.head + s.count) & (len(s.ring) - 1)
	s.ring[pos] = fifoEntry[K]{key: k, at: at}
	s.count++
	s.live++
	s.insert(h, pos)
}

// Delete forgets k, if it is held.
func (s *fifoSet[K]) Delete(k K) bool {
	i := s.find(k)
	if i < 0 {
		return false
	}
	s.kill(i)
	return true
}

// Take forgets k and returns its time, if it is held: Get and Delete in
// one look-up (a TIME_WAIT 4-tuple reopened, for half the connections of
// a churn whose client ports come round within TIME_WAIT).
func (s *fifoSet[K]) Take(k K) (time.Duration, bool) {
	i := s.find(k)
	if i < 0 {
		return 0, false
	}
	at := s.ring[s.index[i].pos-1].at
	s.kill(i)
	return at, true
}

// kill marks the entry of index slot i dead and unindexes it.
func (s *fifoSet[K]) kill(i int) {
	s.ring[s.index[i].pos-1].dead = true
	s.live--
	s.unindex(i)
}

// Front returns the oldest live entry.
func (s *fifoSet[K]) Front() (k K, at time.Duration, ok bool) {
	s.dropDead()
	if s.count == 0 {
		return k, 0, false
	}
	e := &s.ring[s.head]
	return e.key, e.at, true
}

// PopFront forgets the oldest entry, live or dead.
func (s *fifoSet[K]) PopFront() {
	if s.count == 0 {
		return
	}
	if !s.ring[s.head].dead {
		// The front's slot is the one that holds its position: no key
		// of the ring need be read to find it.
		mask := len(s.index) - 1
		pos := uint32(s.head + 1)
		for i := int(uint32(s.hash(s.ring[s.head].key))) & mask; s.index[i].pos != 0; i = (i + 1) & mask {
			if s.index[i].pos == pos {
				s.unindex(i)
				break
			}
		}
		s.live--
	}
	s.advance()
}

// dropDead pops the dead entries at the front.
func (s *fifoSet[K]) dropDead() {
	for s.count > 0 && s.ring[s.head].dead {
		s.advance()
	}
}

func (s *fifoSet[K]) advance() {
	var zero fifoEntry[K]
	s.ring[s.head] = zero
	s.head = (s.head + 1) & (len(s.ring) - 1)
	s.count--
}

// unindex empties index slot i and moves back the keys after it in its
// probe run that could sit earlier (backward-shift deletion).
func (s *fifoSet[K]) unindex(i int) {
	mask := len(s.index) - 1
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		e := s.index[j]
		if e.pos == 0 {
			break
		}
		// The key at j may move to i if its home slot is not in (i, j].
		home := int(e.hash) & mask
		if (j-home)&mask >= (j-i)&mask {
			s.index[i] = e
			i = j
		}
	}
	s.index[i] = fifoSlot{}
}

// grow doubles the ring (oldest first from position 0) and rebuilds the
// index.
func (s *fifoSet[K]) grow() {
	ring := make([]fifoEntry[K], 2*len(s.ring))
	for n := 0; n < s.count; n++ {
		ring[n] = s.ring[(s.head+n)&(len(s.ring)-1)]
	}
	s.ring, s.head = ring, 0
	s.index = make([]fifoSlot, 2*len(ring))
	for pos := 0; pos < s.count; pos++ {
		if !ring[pos].dead {
			s.insert(uint32(s.hash(ring[pos].key)), pos)
		}
	}
}

// hashSeed seeds the hashes of the keys: a 4-tuple's ports and address
// are the peer's to choose, and a fixed hash would let it choose keys
// that all probe the same run.
var hashSeed = maphash.MakeSeed()

// twKey is a 4-tuple as the TIME_WAIT memory keeps it: tupleKey without
// netip.Addr's pointer (its zone; the kernel's records have none), so
// that the collector need not scan it.
type twKey struct {
	netns        uint32
	lport, rport uint16
	l4, r4       bool // IPv4, not IPv4-mapped IPv6
	laddr, raddr [16]byte
}

func twKeyOf(k tupleKey) twKey {
	return twKey{netns: k.netns, lport: k.local.Port(), rport: k.remote.Port(),
		l4: k.local.Addr().Is4(), r4: k.remote.Addr().Is4(),
		laddr: k.local.Addr().As16(), raddr: k.remote.Addr().As16()}
}

func hashTWKey(k twKey) uint64 { return maphash.Comparable(hashSeed, k) }
