package tracker

import (
	"testing"
	"time"
)

// A destroyed cookie is held from its destroy for at least goneFor, in
// whichever block it falls, and forgotten soon after; others are not held.
func TestGoneCookiesHeldForGoneFor(t *testing.T) {
	g := newGoneCookies()
	base := time.Hour
	cookies := []uint64{1, 2, goneBlockBits - 1, goneBlockBits, 5*goneBlockBits + 7, 1 << 40}
	for i, c := range cookies {
		g.Add(c, base+time.Duration(i)*time.Millisecond)
	}
	g.Add(2, base) // again: held once
	if g.Len() != len(cookies) {
		t.Errorf("%d cookies held, want %d", g.Len(), len(cookies))
	}
	for _, c := range []uint64{3, goneBlockBits + 1, 1<<40 + 1, 0} {
		if g.Has(c) {
			t.Errorf("cookie %d held, never destroyed", c)
		}
	}
	for now := base; now < base+goneFor; now += 10 * time.Millisecond {
		g.Expire(now)
		for _, c := range cookies {
			if !g.Has(c) {
				t.Fatalf("cookie %d forgotten %v after its destroy, before goneFor", c, now-base)
			}
		}
	}
	g.Expire(base + goneFor + time.Duration(len(cookies))*time.Millisecond + goneSweep)
	if g.Len() != 0 || g.Blocks() != 0 {
		t.Errorf("%d cookies in %d blocks held after goneFor and a sweep", g.Len(), g.Blocks())
	}
	for _, c := range cookies {
		if g.Has(c) {
			t.Errorf("cookie %d still held", c)
		}
	}
}

// Cookies that fall one to a block (not how the kernel makes them) are
// held in bounded memory: past maxGoneBlocks the block destroyed in least
// lately goes, and the count stays true.
func TestGoneCookiesBounded(t *testing.T) {
	g := newGoneCookies()
	for i := range maxGoneBlocks + 10 {
		g.Add(uint64(i)*goneBlockBits+3, time.Hour+time.Duration(i))
	}
	if g.Blocks() != maxGoneBlocks || g.Len() != maxGoneBlocks {
		t.Errorf("%d blocks, %d cookies, want %d of each", g.Blocks(), g.Len(), maxGoneBlocks)
	}
	if g.Has(3) || !g.Has(uint64(maxGoneBlocks+9)*goneBlockBits+3) {
		t.Error("the least recent block was not the one forgotten")
	}
	n := 0
	for _, b := range g.blocks {
		n += b.count()
	}
	if n != g.Len() {
		t.Errorf("blocks hold %d cookies, count says %d", n, g.Len())
	}
}
