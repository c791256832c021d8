package engine

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// collector keeps the narratives the engine tells.
type collector = testkit.Recorder[*Item, tracker.Narrative]

func newCollector() *collector {
	return testkit.NewRecorder(func(it *Item) (tracker.Narrative, bool) {
		if it.Narrative == nil {
			return tracker.Narrative{}, false
		}
		n := *it.Narrative
		n.Timeline = slices.Clone(n.Timeline) // the tracker reuses its array
		return n, true
	})
}

// verdictAt matches a narrative by its verdict and local end.
func verdictAt(v tracker.Verdict, local netip.AddrPort) func(tracker.Narrative) bool {
	return func(n tracker.Narrative) bool { return n.Verdict == v && n.Local == local }
}

// A connection that was already probing an unanswering peer when tcpwatch
// started: its story is told with the socket's own keepalive settings (not
// the namespace's 7200/75/9), names the process holding it (found in /proc,
// no descriptor borrowed), and ends once, with all its probes.
//
// Loading takes a fraction of a second here but many seconds under qemu TCG
// (the kernel matrix): the socket starts with enough probes to outlast any
// start-up, and once the story has begun the test lowers TCP_KEEPCNT to just
// past the probes already sent, so the end comes soon either way. The kernel
// reads the count at every expiry, and so does the tracer.
func TestExistingProbingConnection(t *testing.T) {
	testkit.RequirePrivileged(t)
	a, b := hosts.Pair(t, "a", "b")
	client, _ := hosts.Connect(t, a, b, 7301)
	const startProbes = 60
	rc, _ := client.SyscallConn()
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 1)
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 1)
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPCNT, startProbes)
	})
	undo, err := a.Blackhole(b.Addr4())
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	// The first probe goes out 1 s after the last ACK: start tcpwatch
	// after it, mid-probing.
	time.Sleep(1500 * time.Millisecond)

	var netns unix.Stat_t
	if err := unix.Stat(a.NetnsPath(), &netns); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Filter: Filter{NetNS: uint32(netns.Ino)}}
	tr, err := tracer.New(cfg.Kernel(tracer.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	e := New(tr, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	col := newCollector()
	done := make(chan error, 1)
	go func() { _, err := e.Run(ctx, col); done <- err }()

	local := netip.MustParseAddrPort(client.LocalAddr().String())
	waitFor := func(v tracker.Verdict, within time.Duration) (tracker.Narrative, bool) {
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			if n, ok := col.Find(verdictAt(v, local)); ok {
				return n, true
			}
			time.Sleep(50 * time.Millisecond)
		}
		return tracker.Narrative{}, false
	}
	probing, ok := waitFor(tracker.KeepaliveProbing, (startProbes-5)*time.Second)
	var lastProbes int
	if ok {
		var info *unix.TCPInfo
		rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
		if err != nil {
			t.Fatal(err)
		}
		lastProbes = int(info.Probes) + 2
		rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPCNT, lastProbes) })
		if err != nil {
			t.Fatal(err)
		}
	}
	final, finalOK := waitFor(tracker.KeepaliveTimeout, 10*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("no keepalive_probing for %v among %d narratives: %+v", local, len(col.Got()), col.Got())
	}
	s := probing.Settings
	if s.KeepaliveTime != time.Second || s.KeepaliveIntvl != time.Second || s.KeepaliveProbes != startProbes {
		t.Errorf("settings %+v, want the socket's own 1s/1s/%d", s, startProbes)
	}
	if probing.Owner.PID != uint32(os.Getpid()) || probing.Owner.Source == wire.OwnerUnknown {
		t.Errorf("owner %+v, want this process (%d)", probing.Owner, os.Getpid())
	}
	if !finalOK || final.Probes != lastProbes || final.Owner.PID != uint32(os.Getpid()) {
		t.Fatalf("final %v, want keepalive_timeout after %d probes: %+v", finalOK, lastProbes, final)
	}
	finals := 0
	for _, n := range col.Got() {
		if n.Local == local && n.Final {
			finals++
		}
	}
	if finals != 1 {
		t.Errorf("%d final narratives for one connection", finals)
	}
}
