package metrics

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// next is the sink the metrics stage hands everything on to.
func next() *testkit.Recorder[*engine.Item, engine.Item] {
	return testkit.NewRecorder(func(it *engine.Item) (engine.Item, bool) { return *it, true })
}

const cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func narr(v tracker.Verdict, local string, begins bool, cg string) *engine.Item {
	return &engine.Item{Narrative: &tracker.Narrative{Verdict: v, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(local),
		Begins: begins}, Cgroup: containers.Parse(cg)}
}

func TestCounts(t *testing.T) {
	m := New(Options{})
	passed := next()
	s := m.Stage(passed)
	for _, it := range []*engine.Item{
		narr(tracker.ConnectRefused, "10.0.0.1:1", false, "/"),
		narr(tracker.ConnectRefused, "10.0.0.1:2", false, "/"),
		narr(tracker.ConnectRefused, "[fd00::1]:1", false, "/"),
		narr(tracker.Stalled, "10.0.0.1:3", true, "/"),
		narr(tracker.Stalled, "10.0.0.1:3", false, "/"),
		narr(tracker.Stalled, "10.0.0.1:3", false, "/"),
		narr(tracker.RetransmitTimeout, "10.0.0.1:3", false, "/"),
		narr(tracker.KeepaliveProbing, "[fd00::1]:4", true, "/"),
		narr(tracker.KeepaliveProbing, "[fd00::1]:4", false, "/"),
	} {
		if err := s.Tell(it); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Tell(&engine.Item{Loss: &engine.Loss{Total: 1, New: 1}}); err != nil {
		t.Fatal(err)
	}
	narratives := 0
	for _, it := range passed.Got() {
		if it.Narrative != nil {
			narratives++
		}
	}
	if items := len(passed.Got()); narratives != 9 || items != 10 {
		t.Errorf("the wrapped sink got %d narratives, %d items", narratives, items)
	}
	m.Observe(engine.Stats{Events: 1234, Lost: 7, RingFull: 5, Recursion: 2, Tracked: 17, Evictions: 3, EndsAtDeadline: 2,
		Skipped: tracer.Skipped{NoStorage: 4, TroubledFull: 6, KeepaliveFull: 8, SynackFull: 9}})

	expected := `
# HELP tcpwatch_rto_episodes_total Retransmission-timeout episodes begun: a peer stopped acknowledging (the first stalled narrative of an outage).
# TYPE tcpwatch_rto_episodes_total counter
tcpwatch_rto_episodes_total{family="ipv4"} 1
# HELP tcpwatch_keepalive_episodes_total Keepalive episodes begun: an idle peer left a keepalive probe unanswered (the first keepalive_probing narrative).
# TYPE tcpwatch_keepalive_episodes_total counter
tcpwatch_keepalive_episodes_total{family="ipv6"} 1
# HELP tcpwatch_records_read_total Kernel records read from the ring buffer.
# TYPE tcpwatch_records_read_total counter
tcpwatch_records_read_total 1234
# HELP tcpwatch_records_lost_total Kernel records tcpwatch could not receive: the ring buffer was full, or a program run was skipped by recursion.
# TYPE tcpwatch_records_lost_total counter
tcpwatch_records_lost_total{reason="ring_full"} 5
tcpwatch_records_lost_total{reason="recursion"} 2
# HELP tcpwatch_kernel_skips_total What the kernel half could not keep for want of room, and so did not send: a socket's storage (no_storage), a connection in trouble (troubled_full), a keepalive probe (keepalive_full), a listener's SYN-ACK retransmission (synack_full).
# TYPE tcpwatch_kernel_skips_total counter
tcpwatch_kernel_skips_total{reason="keepalive_full"} 8
tcpwatch_kernel_skips_total{reason="no_storage"} 4
tcpwatch_kernel_skips_total{reason="synack_full"} 9
tcpwatch_kernel_skips_total{reason="troubled_full"} 6
# HELP tcpwatch_tracker_evictions_total Connections the tracker forgot to stay under --max-connections.
# TYPE tcpwatch_tracker_evictions_total counter
tcpwatch_tracker_evictions_total 3
# HELP tcpwatch_ends_at_deadline_total Ends told at the kernel's deadline because the kill's records never arrived (narratives marked end_unseen): records missing that no kernel counter saw.
# TYPE tcpwatch_ends_at_deadline_total counter
tcpwatch_ends_at_deadline_total 2
# HELP tcpwatch_tracked_connections Connections the tracker holds now.
# TYPE tcpwatch_tracked_connections gauge
tcpwatch_tracked_connections 17
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(expected),
		"tcpwatch_rto_episodes_total", "tcpwatch_keepalive_episodes_total",
		"tcpwatch_records_read_total", "tcpwatch_records_lost_total", "tcpwatch_kernel_skips_total", "tcpwatch_tracker_evictions_total",
		"tcpwatch_ends_at_deadline_total", "tcpwatch_tracked_connections"); err != nil {
		t.Error(err)
	}
	told := map[[2]string]float64{{"connect_refused", "ipv4"}: 2, {"connect_refused", "ipv6"}: 1,
		{"stalled", "ipv4"}: 3, {"retransmit_timeout", "ipv4"}: 1, {"keepalive_probing", "ipv6"}: 2}
	for _, v := range words.Verdicts(nil) {
		for _, fam := range []string{"ipv4", "ipv6"} {
			got := testutil.ToFloat64(m.narratives.WithLabelValues(string(v), fam))
			if want := told[[2]string{string(v), fam}]; got != want {
				t.Errorf("tcpwatch_narratives_total{verdict=%q,family=%q} = %v, want %v", v, fam, got, want)
			}
		}
	}
	if n, err := testutil.GatherAndCount(m.Registry, "tcpwatch_build_info"); err != nil || n != 1 {
		t.Errorf("build_info: %d series (%v)", n, err)
	}
}

// Every registered verdict has its series from the start, and each
// narrative told through the stage counts under its own verdict.
func TestEveryVerdictIsCounted(t *testing.T) {
	m := New(Options{})
	if n, err := testutil.GatherAndCount(m.Registry, "tcpwatch_narratives_total"); err != nil || n != 2*len(words.Registry) {
		t.Errorf("%d narrative series before any narrative (%v), want 2 per registered verdict (%d)", n, err, 2*len(words.Registry))
	}
	s := m.Stage(next())
	for i, v := range words.Verdicts(nil) {
		for range i + 1 {
			if err := s.Tell(narr(v, "10.0.0.1:1", false, "/")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, v := range words.Verdicts(nil) {
		if got := testutil.ToFloat64(m.narratives.WithLabelValues(string(v), "ipv4")); got != float64(i+1) {
			t.Errorf("%s counted %v times, told %d", v, got, i+1)
		}
	}
}

// Labels never carry an address or a port; the container label only when asked.
func TestLabels(t *testing.T) {
	m := New(Options{Container: true})
	s := m.Stage(next())
	s.Tell(narr(tracker.PeerReset, "10.9.8.7:4567", false, "/system.slice/docker-"+cid+".scope"))
	s.Tell(narr(tracker.PeerReset, "10.9.8.7:4568", false, "/system.slice/sshd.service"))
	expected := `
# HELP tcpwatch_narratives_total Narratives told, by verdict and address family (after the filters).
# TYPE tcpwatch_narratives_total counter
tcpwatch_narratives_total{container="",family="ipv4",verdict="peer_reset"} 1
tcpwatch_narratives_total{container="` + cid + `",family="ipv4",verdict="peer_reset"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(expected), "tcpwatch_narratives_total"); err != nil {
		t.Error(err)
	}

	srv, err := m.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	resp, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, bad := range []string{"10.9.8.7", ":4567", "laddr", "port="} {
		if strings.Contains(text, bad) {
			t.Errorf("/metrics exposes %q", bad)
		}
	}
	for _, want := range []string{"tcpwatch_build_info{goversion=", "go_goroutines", "tcpwatch_narratives_total{container="} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
