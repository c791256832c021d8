package tracker

import "time"

// timeQueue holds values in the order of their time, and among equal times
// in the order they were pushed: what a stable sort by time of everything
// pushed would give. The tracker's two queues (narratives waiting out the
// grace period, connections closing) are pushed almost always in time
// order, so a push is nearly always an append, and they are taken from
// the front: each operation is O(1) in the usual case, where sorting the
// whole queue on every record cost tens of µs per connection under churn
// with --all (hundreds of narratives wait out the 50 ms grace at once).
type timeQueue[T any] struct {
	items []timed[T]
	head  int // items[:head] were taken
}

type timed[T any] struct {
	at time.Duration
	v  T
}

func (q *timeQueue[T]) Len() int { return len(q.items) - q.head }

// Push inserts v after every value whose time is at or before at.
func (q *timeQueue[T]) Push(at time.Duration, v T) {
	if q.head > 0 && q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	n := len(q.items)
	if n == q.head || q.items[n-1].at <= at {
		q.items = append(q.items, timed[T]{at, v})
		return
	}
	// Out of order (records of two CPUs, a verdict dated at an earlier
	// close): the first item later than at, by binary search.
	lo, hi := q.head, n-1
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if q.items[m].at <= at {
			lo = m + 1
		} else {
			hi = m
		}
	}
	var zero timed[T]
	q.items = append(q.items, zero)
	copy(q.items[lo+1:], q.items[lo:n])
	q.items[lo] = timed[T]{at, v}
}

// Front returns the earliest value and its time; ok is false when the
// queue is empty.
func (q *timeQueue[T]) Front() (at time.Duration, v T, ok bool) {
	if q.head == len(q.items) {
		return 0, v, false
	}
	it := q.items[q.head]
	return it.at, it.v, true
}

// Pop removes the earliest value.
func (q *timeQueue[T]) Pop() {
	q.items[q.head] = timed[T]{} // let the value be collected
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head >= 1024 && q.head*2 >= len(q.items):
		// Reuse the space taken from the front rather than growing.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
}
