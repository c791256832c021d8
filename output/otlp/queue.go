package otlp

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	sdklog "go.opentelemetry.io/otel/sdk/log"
)

// queue is the log records' way to the collector: a sdklog.Processor with
// a bounded queue and one goroutine that exports batches. It stands where
// the SDK's BatchProcessor would, for one reason: the BatchProcessor
// drops records when its queue is full but only logs the number, and
// tcpwatch must count every record it could not send (in `stats` and in
// the metrics). Like the BatchProcessor it never blocks the caller: a
// full queue drops the newest record and counts it.
type queue struct {
	exp      sdklog.Exporter
	max      int           // records held at most (OTEL_BLRP_MAX_QUEUE_SIZE)
	batch    int           // records per export at most (OTEL_BLRP_MAX_EXPORT_BATCH_SIZE)
	delay    time.Duration // longest a record waits for a batch (OTEL_BLRP_SCHEDULE_DELAY)
	timeout  time.Duration // one export's deadline, retries included (OTEL_BLRP_EXPORT_TIMEOUT)
	mu       sync.Mutex
	held     []sdklog.Record
	wake     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	// Shutdown runs once (tcpwatch calls it, then the provider does).
	shutdownOnce sync.Once
	shutdownErr  error
	// ctx ends every export when Shutdown runs out of time.
	ctx    context.Context
	cancel context.CancelFunc

	emitted, exported, failed, dropped atomic.Uint64
	lastErr                            atomic.Value // string: the latest export error
}

func newQueue(exp sdklog.Exporter, max, batch int, delay, timeout time.Duration) *queue {
	q := &queue{exp: exp, max: max, batch: batch, delay: delay, timeout: timeout,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	go q.run()
	return q
}

// Enabled: every record tcpwatch emits is wanted.
func (q *queue) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }

// OnEmit holds a copy of r for the exporting goroutine, or counts it
// dropped when the queue is full or closed.
func (q *queue) OnEmit(_ context.Context, r *sdklog.Record) error {
	q.emitted.Add(1)
	q.mu.Lock()
	if len(q.held) >= q.max || q.closed() {
		q.mu.Unlock()
		q.dropped.Add(1)
		return nil
	}
	q.held = append(q.held, r.Clone())
	n := len(q.held)
	q.mu.Unlock()
	if n >= q.batch {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

func (q *queue) closed() bool {
	select {
	case <-q.stop:
		return true
	default:
		return false
	}
}

// take removes up to one batch from the queue.
func (q *queue) take() []sdklog.Record {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(len(q.held), q.batch)
	if n == 0 {
		return nil
	}
	out := make([]sdklog.Record, n)
	copy(out, q.held[:n])
	// Shift rather than reslice, so the backing array does not creep
	// forward and the queue's memory stays at max records.
	rest := copy(q.held, q.held[n:])
	clear(q.held[rest:])
	q.held = q.held[:rest]
	return out
}

func (q *queue) export(batch []sdklog.Record) {
	if q.ctx.Err() != nil {
		q.dropped.Add(uint64(len(batch))) // Shutdown ran out of time: never sent
		return
	}
	ctx, cancel := context.WithTimeout(q.ctx, q.timeout)
	defer cancel()
	if err := q.exp.Export(ctx, batch); err != nil {
		q.failed.Add(uint64(len(batch)))
		q.lastErr.Store(err.Error())
		return
	}
	q.exported.Add(uint64(len(batch)))
}

func (q *queue) run() {
	defer close(q.done)
	tick := time.NewTicker(q.delay)
	defer tick.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-tick.C:
		case <-q.wake:
		}
		for {
			b := q.take()
			if b == nil {
				break
			}
			q.export(b)
			if len(b) < q.batch || q.closed() {
				break // the rest waits for the next tick or a full batch, or Shutdown
			}
		}
	}
}

// Shutdown exports what is held until ctx ends (an export still running
// then is cut short and counts as failed); what is still held is counted
// dropped. The exporter is shut down last.
func (q *queue) Shutdown(ctx context.Context) error {
	q.shutdownOnce.Do(func() { q.shutdownErr = q.shutdown(ctx) })
	return q.shutdownErr
}

func (q *queue) shutdown(ctx context.Context) error {
	q.stopOnce.Do(func() { close(q.stop) })
	stop := context.AfterFunc(ctx, q.cancel)
	defer stop()
	<-q.done
	for q.ctx.Err() == nil {
		b := q.take()
		if b == nil {
			break
		}
		q.export(b)
	}
	q.mu.Lock()
	q.dropped.Add(uint64(len(q.held)))
	q.held = nil
	q.mu.Unlock()
	return q.exp.Shutdown(ctx)
}

// ForceFlush exports everything held now.
func (q *queue) ForceFlush(ctx context.Context) error {
	for ctx.Err() == nil {
		b := q.take()
		if b == nil {
			break
		}
		q.export(b)
	}
	return q.exp.ForceFlush(ctx)
}
