package metrics

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tcpwatch/tcpwatch/tracer/incident"
)

// The per-peer series live only while the peer's incident is open, and
// no more than MaxPeerSeries peers are labelled at once.
func TestIncidentSeriesAreBounded(t *testing.T) {
	m := New(Options{})
	open := func(i int) *incident.Incident {
		return &incident.Incident{ID: fmt.Sprint("i-", i), Phase: incident.Open, InTrouble: 3,
			Peer: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})}
	}
	for i := 0; i < MaxPeerSeries+50; i++ {
		m.Incident(open(i))
	}
	if n := testutil.CollectAndCount(m.incidents.inTrouble); n != MaxPeerSeries+1 {
		t.Errorf("%d series of tcpwatch_incident_connections, want %d (the bound and other)", n, MaxPeerSeries+1)
	}
	if v := testutil.ToFloat64(m.incidents.inTrouble.WithLabelValues(otherPeers)); v != 150 {
		t.Errorf("other: %v connections, want 150", v)
	}
	if v := testutil.ToFloat64(m.incidents.open.WithLabelValues(otherPeers)); v != 50 {
		t.Errorf("other: %v open, want 50", v)
	}
	for i := 0; i < MaxPeerSeries+50; i++ {
		inc := open(i)
		inc.Phase, inc.Outcome, inc.InTrouble = incident.Close, incident.Recovered, 0
		m.Incident(inc)
	}
	if n := testutil.CollectAndCount(m.incidents.inTrouble) + testutil.CollectAndCount(m.incidents.open); n != 0 {
		t.Errorf("%d per-peer series left after every incident closed", n)
	}
	if v := testutil.ToFloat64(m.incidents.ended.WithLabelValues("recovered")); v != MaxPeerSeries+50 {
		t.Errorf("incidents_total{recovered} = %v", v)
	}
}
