package tracker

import (
	"hash/maphash"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func hashCookie(c uint64) uint64 { return maphash.Comparable(hashSeed, c) }

// fifoModel is what a fifoSet must behave as: a list in push order, a
// key at most once live in it.
type fifoModel struct {
	entries []fifoEntry[uint64]
}

func (m *fifoModel) find(k uint64) int {
	return slices.IndexFunc(m.entries, func(e fifoEntry[uint64]) bool { return !e.dead && e.key == k })
}

func (m *fifoModel) live() int {
	n := 0
	for _, e := range m.entries {
		if !e.dead {
			n++
		}
	}
	return n
}

// The set against the model, through random pushes, deletes, takes, pops and
// lookups over a small key space (so keys come back after they left),
// with hashes good and bad: a hash of few values makes long probe runs
// that wrap around the index, where a wrong backward shift loses keys.
func TestFifoSetMatchesModel(t *testing.T) {
	hashes := map[string]func(uint64) uint64{
		"seeded":   hashCookie,
		"clashing": func(k uint64) uint64 { return k % 5 * 0x9e3779b97f4a7c15 },
		"wrapping": func(uint64) uint64 { return ^uint64(0) },
	}
	for name, hash := range hashes {
		t.Run(name, func(t *testing.T) {
			const maxRing = 64
			s := newFifoSet(maxRing, hash)
			var m fifoModel
			rng := rand.New(rand.NewPCG(1, 2))
			for step := range 200000 {
				k := uint64(rng.IntN(150) + 1)
				at := time.Duration(step)
				switch op := rng.IntN(10); {
				case op < 5:
					if s.Full() {
						s.PopFront()
						m.entries = m.entries[1:]
					}
					s.Set(k, at)
					if i := m.find(k); i >= 0 {
						m.entries[i].dead = true
					}
					m.entries = append(m.entries, fifoEntry[uint64]{key: k, at: at})
				case op < 6:
					deleted := s.Delete(k)
					i := m.find(k)
					if deleted != (i >= 0) {
						t.Fatalf("step %d: Delete(%d) = %v, model has it at %d", step, k, deleted, i)
					}
					if i >= 0 {
						m.entries[i].dead = true
					}
				case op < 7:
					took, ok := s.Take(k)
					i := m.find(k)
					if ok != (i >= 0) || ok && took != m.entries[i].at {
						t.Fatalf("step %d: Take(%d) = %v %v, model has it at %d", step, k, took, ok, i)
					}
					if i >= 0 {
						m.entries[i].dead = true
					}
				case op < 8:
					s.PopFront()
					if len(m.entries) > 0 {
						m.entries = m.entries[1:]
					}
				}
				for len(m.entries) > 0 && m.entries[0].dead {
					m.entries = m.entries[1:]
				}
				fk, fat, ok := s.Front()
				if ok != (len(m.entries) > 0) || ok && (fk != m.entries[0].key || fat != m.entries[0].at) {
					t.Fatalf("step %d: Front() = %d %v %v, model %+v", step, fk, fat, ok, m.entries[:min(1, len(m.entries))])
				}
				if s.Len() != m.live() || s.Entries() != len(m.entries) {
					t.Fatalf("step %d: %d live of %d entries, model %d of %d", step, s.Len(), s.Entries(), m.live(), len(m.entries))
				}
				probe := uint64(rng.IntN(150) + 1)
				at, ok = s.Get(probe)
				i := m.find(probe)
				if ok != (i >= 0) || ok && at != m.entries[i].at {
					t.Fatalf("step %d: Get(%d) = %v %v, model has it at %d", step, probe, at, ok, i)
				}
			}
		})
	}
}

// The set grows from its first size up to its bound, keeping order.
func TestFifoSetGrows(t *testing.T) {
	s := newFifoSet(1<<14, hashCookie)
	for i := range 1 << 14 {
		s.Push(uint64(i+1), time.Duration(i))
	}
	if !s.Full() || s.Len() != 1<<14 {
		t.Fatalf("full %v with %d, want full with %d", s.Full(), s.Len(), 1<<14)
	}
	for i := range 1 << 14 {
		if at, ok := s.Get(uint64(i + 1)); !ok || at != time.Duration(i) {
			t.Fatalf("key %d: %v %v", i+1, at, ok)
		}
	}
	k, _, _ := s.Front()
	if k != 1 {
		t.Errorf("oldest %d, want 1", k)
	}
}

// A key pushed twice (a cookie destroyed twice over) is held until its
// later entry leaves.
func TestFifoSetPushedTwice(t *testing.T) {
	s := newFifoSet(8, hashCookie)
	s.Push(7, 1)
	s.Push(8, 2)
	s.Push(7, 3)
	s.PopFront()
	if at, ok := s.Get(7); !ok || at != 3 {
		t.Errorf("after its first entry left: %v %v, want held from 3", at, ok)
	}
	s.PopFront()
	s.PopFront()
	if s.Has(7) || s.Len() != 0 {
		t.Errorf("after both entries left: held %v, %d live", s.Has(7), s.Len())
	}
}

// A 4-tuple of IPv4 and the same written as IPv4-mapped IPv6 are two
// sockets: their keys differ.
func TestTWKeyKeepsFamily(t *testing.T) {
	v4 := tupleKey{1, netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:1024")}
	v6 := tupleKey{1, netip.MustParseAddrPort("[::ffff:10.0.0.1]:80"), netip.MustParseAddrPort("[::ffff:10.0.0.2]:1024")}
	if twKeyOf(v4) == twKeyOf(v6) {
		t.Error("IPv4 and IPv4-mapped IPv6 4-tuples share a key")
	}
	if twKeyOf(v4) != twKeyOf(v4) {
		t.Error("a 4-tuple's key differs from itself")
	}
}
