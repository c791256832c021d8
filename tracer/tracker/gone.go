package tracker

import (
	"math/bits"
	"time"
)

// goneCookies holds the cookies of the sockets destroyed lately (Tracker.
// gone), each for at least goneFor. The kernel makes socket cookies from
// one counter (sock_gen_cookie(): each CPU takes them in batches of 4,096),
// so the cookies destroyed within a second are a few dense runs: they are
// kept as bits in blocks of goneBlockBits consecutive cookies, found by
// the block's number in a small map. Under --all churn every end adds one
// and every new end looks one up: as a hash set of 65,536 cookies each
// was a cache miss or two (an eighth of the tracker's work in
// BenchmarkReplayAll), as blocks it is a bit in one of a few warm blocks.
// A block is forgotten whole once its latest cookie is goneFor old (swept
// every goneSweep): its earlier cookies are kept longer, never shorter.
type goneCookies struct {
	blocks    map[uint64]*goneBlock
	cookies   int           // cookies held
	nextSweep time.Duration // when to look for expired blocks again
}

type goneBlock struct {
	bits   [goneBlockBits / 64]uint64
	latest time.Duration // the latest destroy of a cookie in the block
	n      int
}

const (
	goneBlockBits = 1024
	goneSweep     = 100 * time.Millisecond
	// maxGoneBlocks bounds the memory (about 140 bytes a block): past it
	// the block destroyed in least lately is forgotten. Cookies are dense,
	// so it holds far more than maxGoneKept in the usual case.
	maxGoneBlocks = maxGoneKept / 16
)

func newGoneCookies() *goneCookies { return &goneCookies{blocks: map[uint64]*goneBlock{}} }

// Len is the number of cookies held.
func (g *goneCookies) Len() int { return g.cookies }

// Blocks is the number of blocks held.
func (g *goneCookies) Blocks() int { return len(g.blocks) }

// Has says whether cookie is held.
func (g *goneCookies) Has(cookie uint64) bool {
	b := g.blocks[cookie/goneBlockBits]
	i := cookie % goneBlockBits
	return b != nil && b.bits[i/64]&(1<<(i%64)) != 0
}

// Add holds cookie, destroyed at mono.
func (g *goneCookies) Add(cookie uint64, mono time.Duration) {
	k := cookie / goneBlockBits
	b := g.blocks[k]
	if b == nil {
		if len(g.blocks) >= maxGoneBlocks {
			g.evictLeastRecent()
		}
		b = &goneBlock{}
		g.blocks[k] = b
	}
	i := cookie % goneBlockBits
	if w := &b.bits[i/64]; *w&(1<<(i%64)) == 0 {
		*w |= 1 << (i % 64)
		b.n++
		g.cookies++
	}
	b.latest = max(b.latest, mono)
}

// Expire forgets the blocks whose latest cookie was destroyed goneFor or
// more before now, looking every goneSweep.
func (g *goneCookies) Expire(now time.Duration) {
	if now < g.nextSweep || len(g.blocks) == 0 {
		return
	}
	g.nextSweep = now + goneSweep
	for k, b := range g.blocks {
		if now-b.latest >= goneFor {
			g.cookies -= b.n
			delete(g.blocks, k)
		}
	}
}

func (g *goneCookies) evictLeastRecent() {
	var oldest uint64
	var least *goneBlock
	for k, b := range g.blocks {
		if least == nil || b.latest < least.latest {
			oldest, least = k, b
		}
	}
	if least != nil {
		g.cookies -= least.n
		delete(g.blocks, oldest)
	}
}

// count is the cookies a block holds, from its bits (for tests).
func (b *goneBlock) count() int {
	n := 0
	for _, w := range b.bits {
		n += bits.OnesCount64(w)
	}
	return n
}
