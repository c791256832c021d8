package tracer

// Losses splits the records the kernel could not deliver. (Placeholder
// until the kernel half counts recursion misses: only ring-full drops.)
type Losses struct {
	RingFull, Recursion uint64
}

// Losses reads the kernel's loss counters.
func (t *Tracer) Losses() (Losses, error) {
	n, err := t.Lost()
	return Losses{RingFull: n}, err
}
