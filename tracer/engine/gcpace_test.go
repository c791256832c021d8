package engine

import (
	"runtime/debug"
	"testing"
	"time"
)

// The collector is lazy while records flood in, and back to GOGC=100 once
// they slow down; without TuneGC (GOGC set, or the default mode) it is
// left alone.
func TestCollectorPacedByRecords(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	defer lazyGC.Store(false)
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1)) // -1 reads it
	gc := func() int { p := debug.SetGCPercent(-1); debug.SetGCPercent(p); return p }
	t0 := time.Now()

	var off memoryReturn
	off.paceGC(0, t0)
	off.paceGC(1_000_000, t0.Add(time.Second))
	if gc() != 100 || off.lazy {
		t.Fatalf("without TuneGC: GOGC %d, lazy %v", gc(), off.lazy)
	}

	TuneGC(ModeDefault, func(string) string { return "" })
	if lazyGC.Load() {
		t.Fatal("the default mode paces the collector")
	}
	TuneGC(ModeAll, func(k string) string { return map[string]string{"GOGC": "200"}[k] })
	if lazyGC.Load() {
		t.Fatal("GOGC set, yet the collector is paced")
	}
	TuneGC(ModeAll, func(string) string { return "" })

	var m memoryReturn
	m.paceGC(0, t0)
	m.paceGC(10_000, t0.Add(time.Second)) // 10,000 a second: not a flood
	if gc() != 100 {
		t.Errorf("at 10,000 records a second: GOGC %d, want 100", gc())
	}
	m.paceGC(10_000+1_500, t0.Add(time.Second+50*time.Millisecond)) // 30,000 a second
	if gc() != gcPercentFlood || !m.lazy {
		t.Errorf("at 30,000 records a second: GOGC %d, want %d", gc(), gcPercentFlood)
	}
	m.paceGC(11_500+500, t0.Add(time.Second+100*time.Millisecond)) // 10,000 a second: between
	if gc() != gcPercentFlood {
		t.Errorf("at 10,000 records a second after a flood: GOGC %d, want it kept at %d", gc(), gcPercentFlood)
	}
	m.paceGC(12_000+100, t0.Add(time.Second+150*time.Millisecond)) // 2,000 a second
	if gc() != 100 || m.lazy {
		t.Errorf("at 2,000 records a second: GOGC %d, want 100", gc())
	}
}
