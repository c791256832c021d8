package tracer_test

import (
	"io"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// close_wait_stuck's cost: in default mode, with the close-wait scan
// running (every 50 ms, far more often than tcpwatch's), connections
// whose peer closes first and whose owner then closes send no record at
// all; only a socket held in CLOSE_WAIT past the threshold is marked, and
// then its end is sent.
func TestPeerClosedConnectionsCostNoRecord(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := pair(t)
	ns := hosts.Netns(t, b) // the server's side: where CLOSE_WAIT happens
	col := startTracer(t, tracer.Config{FilterNetNS: ns})
	r, err := tracer.OpenSocketReaderWith(tracer.SocketReaderOptions{ConnectionsOnly: true,
		MarkCloseWait: col.t, CloseWaitAfter: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	stop := make(chan struct{})
	scanned := make(chan int)
	go func() {
		n := 0
		defer func() { scanned <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := r.Read(ns); err == nil {
				n++
			}
		}
	}()

	const churn = 200
	for i := 0; i < churn; i++ {
		c, s := hosts.Connect(t, a, b, 7300+i%50)
		c.Close() // the peer closes first: s goes CLOSE_WAIT
		if _, err := s.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("server read: %v", err)
		}
		s.Close() // and its owner closes it: CLOSE_WAIT -> LAST_ACK
	}
	// Positive control: one held in CLOSE_WAIT past the threshold.
	c, held := hosts.Connect(t, a, b, 7399)
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	var cookie uint64
	for cookie == 0 {
		socks, _ := r.Read(ns)
		for _, s := range socks {
			if s.CloseWaitStuck && s.Local.Port() == 7399 {
				cookie = s.Cookie
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the held socket was never found stuck in CLOSE_WAIT")
		}
		time.Sleep(100 * time.Millisecond)
	}
	held.Close()
	end := col.wait(t, 5*time.Second, "the stuck socket's end", func(e *wire.Event) bool {
		return e.Cookie == cookie && e.Kind == wire.KindState && e.OldState == tcp.StateCloseWait
	})
	close(stop)
	scans := <-scanned
	col.mu.Lock()
	others := 0
	for _, e := range col.events {
		// Each hosts.Connect opens and closes a listener: those two
		// records are the listener's (always told), not a connection's.
		if e.Cookie != cookie && e.Remote.Port() != 0 {
			others++
		}
	}
	col.mu.Unlock()
	t.Logf("%d peer-closed connections, %d scans: %d connection records; the stuck one's end: %s -> %s", churn, scans, others, end.OldState, end.State)
	if end.Flags&wire.FlagCloseWaitStuck == 0 {
		t.Errorf("the stuck socket's end does not say the scan marked it: flags %b", end.Flags)
	}
	if others != 0 || scans == 0 {
		col.dump(t)
		t.Errorf("%d records for %d healthy peer-closed connections (%d scans)", others, churn, scans)
	}
}
