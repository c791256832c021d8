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

// Between an incident's records its gauge follows the count the stage
// reports every second.
func TestIncidentGaugeFollowsTheCount(t *testing.T) {
	m := New(Options{})
	peer := netip.MustParseAddr("10.0.0.5")
	m.Incident(&incident.Incident{ID: "a-1", Phase: incident.Open, InTrouble: 40, Peer: peer})
	m.IncidentInTrouble("a-1", 25)
	m.IncidentInTrouble("b-9", 7) // not told: no series
	if v := testutil.ToFloat64(m.incidents.inTrouble.WithLabelValues("10.0.0.5")); v != 25 {
		t.Errorf("gauge %v, want 25", v)
	}
	if n := testutil.CollectAndCount(m.incidents.inTrouble); n != 1 {
		t.Errorf("%d series", n)
	}
	m.Incident(&incident.Incident{ID: "a-1", Phase: incident.Close, Outcome: incident.Mixed, Peer: peer})
	if n := testutil.CollectAndCount(m.incidents.inTrouble); n != 0 {
		t.Errorf("%d series after the close", n)
	}
}
