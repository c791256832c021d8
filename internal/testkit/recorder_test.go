package testkit

import (
	"sync"
	"testing"
)

type item struct {
	verdict *string
}

func TestRecorderKeepsCopies(t *testing.T) {
	r := NewRecorder(func(it *item) (string, bool) {
		if it.verdict == nil {
			return "", false
		}
		return *it.verdict, true
	})
	// The teller reuses its item: the recorder must have copied.
	v := "stalled"
	it := &item{verdict: &v}
	r.Tell(it)
	v = "recovered"
	r.Tell(it)
	r.Tell(&item{})
	r.Flush()
	if got := r.Got(); len(got) != 2 || got[0] != "stalled" || got[1] != "recovered" {
		t.Errorf("kept %q, want [stalled recovered]", got)
	}
	if r.Flushes() != 1 {
		t.Errorf("%d flushes, want 1", r.Flushes())
	}
	if got, ok := r.Find(func(s string) bool { return s == "recovered" }); !ok || got != "recovered" {
		t.Errorf("Find: %q %v", got, ok)
	}
	if _, ok := r.Find(func(s string) bool { return s == "untold" }); ok {
		t.Error("Find found what was never told")
	}
}

func TestRecorderConcurrent(t *testing.T) {
	r := NewRecorder(func(n int) (int, bool) { return n, true })
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				r.Tell(i*100 + j)
			}
		}()
	}
	wg.Wait()
	if n := len(r.Got()); n != 800 {
		t.Errorf("kept %d of 800", n)
	}
}
