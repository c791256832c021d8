package otlp

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
)

// stuckExporter is a collector that does not answer until released, then
// accepts or refuses everything.
type stuckExporter struct {
	release chan struct{}
	refuse  bool
	mu      sync.Mutex
	got     int
	calls   atomic.Int64
}

func (s *stuckExporter) Export(ctx context.Context, rs []sdklog.Record) error {
	s.calls.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.refuse {
		return errors.New("refused")
	}
	s.mu.Lock()
	s.got += len(rs)
	s.mu.Unlock()
	return nil
}
func (s *stuckExporter) Shutdown(context.Context) error   { return nil }
func (s *stuckExporter) ForceFlush(context.Context) error { return nil }

// A collector that does not answer must not hold up the caller nor grow
// the queue past its bound; everything emitted ends up exported or
// counted as dropped.
func TestQueueNeverBlocksAndCountsDrops(t *testing.T) {
	exp := &stuckExporter{release: make(chan struct{})}
	const max, batch, n = 100, 10, 5000
	q := newQueue(exp, max, batch, 10*time.Millisecond, time.Minute)
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(q))
	logger := lp.Logger("test")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			var r log.Record
			r.SetBody(attribute.IntValue(i))
			logger.Emit(context.Background(), r)
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Emit blocked while the collector did not answer")
	}
	q.mu.Lock()
	held := len(q.held)
	q.mu.Unlock()
	if held > max {
		t.Errorf("queue holds %d records, bound %d", held, max)
	}
	dropped := q.dropped.Load()
	// At most one batch is in the stuck export and max wait in the queue.
	if dropped < n-max-batch {
		t.Errorf("dropped %d of %d with the collector stuck; want at least %d", dropped, n, n-max-batch)
	}
	close(exp.release)
	if err := lp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := struct{ emitted, exported, failed, dropped uint64 }{q.emitted.Load(), q.exported.Load(), q.failed.Load(), q.dropped.Load()}
	if s.emitted != n || s.exported+s.failed+s.dropped != n || s.failed != 0 || int(s.exported) != exp.got {
		t.Errorf("emitted %d exported %d failed %d dropped %d (collector got %d): every record must be accounted for once",
			s.emitted, s.exported, s.failed, s.dropped, exp.got)
	}
	t.Logf("%d emitted with the collector stuck: %d exported after it answered, %d dropped", n, s.exported, s.dropped)
}

// A collector still stuck at exit: Shutdown gives up when its context
// ends and counts the export it cut short as failed, what was waiting as
// dropped.
func TestQueueShutdownIsBounded(t *testing.T) {
	exp := &stuckExporter{release: make(chan struct{})}
	q := newQueue(exp, 100, 10, 10*time.Millisecond, time.Hour)
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(q))
	logger := lp.Logger("test")
	for range 50 {
		logger.Emit(context.Background(), log.Record{})
	}
	for exp.calls.Load() == 0 {
		time.Sleep(time.Millisecond) // the first batch is in the stuck export
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	lp.Shutdown(ctx)
	if e, x, f, d := q.emitted.Load(), q.exported.Load(), q.failed.Load(), q.dropped.Load(); e != 50 || x != 0 || f == 0 || f+d != 50 {
		t.Errorf("emitted %d exported %d failed %d dropped %d; want 50 = failed + dropped, failed > 0", e, x, f, d)
	}
	// After shutdown nothing is held and new records are dropped, counted.
	logger.Emit(context.Background(), log.Record{})
	if q.held != nil {
		t.Errorf("queue holds %d records after shutdown", len(q.held))
	}
}
