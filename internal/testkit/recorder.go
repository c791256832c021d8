package testkit

import "sync"

// Recorder is a recording sink: it keeps what a teller hands it, as keep
// makes it (a copy: a teller may reuse what it passes; false drops the
// item), safe for concurrent use. Tell and Flush make it a sink of any
// teller of T: with T = *engine.Item it is an engine.Sink, without the kit
// importing the engine, so the engine's own tests can use it too.
type Recorder[T, V any] struct {
	keep    func(T) (V, bool)
	mu      sync.Mutex
	got     []V
	flushes int
}

// NewRecorder returns an empty Recorder that keeps what keep returns.
func NewRecorder[T, V any](keep func(T) (V, bool)) *Recorder[T, V] {
	return &Recorder[T, V]{keep: keep}
}

// Tell keeps it.
func (r *Recorder[T, V]) Tell(it T) error {
	v, ok := r.keep(it)
	if !ok {
		return nil
	}
	r.mu.Lock()
	r.got = append(r.got, v)
	r.mu.Unlock()
	return nil
}

// Flush counts the teller's flushes.
func (r *Recorder[T, V]) Flush() error {
	r.mu.Lock()
	r.flushes++
	r.mu.Unlock()
	return nil
}

// Got returns what was kept so far, in the order told.
func (r *Recorder[T, V]) Got() []V {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]V(nil), r.got...)
}

// Flushes returns how many times the teller flushed.
func (r *Recorder[T, V]) Flushes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.flushes
}

// Find returns the first kept item that match accepts.
func (r *Recorder[T, V]) Find(match func(V) bool) (V, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.got {
		if match(v) {
			return v, true
		}
	}
	var zero V
	return zero, false
}
