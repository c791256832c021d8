package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpwatch/tcpwatch/tracer/incident"
)

// MaxPeerSeries bounds the peers labelled at once: the per-peer series
// exist only while an incident with that peer is open, and beyond this
// many peers the others are summed under peer="other". With two labelled
// gauges, incidents add at most 2×(MaxPeerSeries+1) series.
const MaxPeerSeries = 100

// otherPeers is the peer label of the peers beyond MaxPeerSeries.
const otherPeers = "other"

type incidentMetrics struct {
	open      *prometheus.GaugeVec
	inTrouble *prometheus.GaugeVec
	ended     *prometheus.CounterVec
	// open incidents (two connections or more) by id, with their label
	// and their latest count in trouble.
	byID    map[string]*openIncident
	byLabel map[string]int // open incidents per label
}

type openIncident struct {
	label     string
	inTrouble int
}

func newIncidentMetrics() incidentMetrics {
	im := incidentMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tcpwatch_incidents_open",
			Help: "Incidents open now (two or more connections to one peer in trouble), by peer address; a peer's series exists only while it has one open (at most 100 peers, the rest as peer=\"other\").",
		}, []string{"peer"}),
		inTrouble: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tcpwatch_incident_connections",
			Help: "Connections in trouble (stalled or keepalive_probing) in the open incidents, by peer address (updated every second); the series exists only while an incident is open.",
		}, []string{"peer"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcpwatch_incidents_total",
			Help: "Incidents closed, by outcome: recovered, fatal, mixed, or unfinished (tcpwatch stopped first).",
		}, []string{"outcome"}),
		byID:    map[string]*openIncident{},
		byLabel: map[string]int{},
	}
	for _, o := range []incident.Outcome{incident.Recovered, incident.Fatal, incident.Mixed, incident.Unfinished} {
		im.ended.WithLabelValues(string(o))
	}
	return im
}

// IncidentInTrouble takes an open incident's connections in trouble now
// (the stage's InTrouble, about once a second), so that the gauge follows
// them between the incident's records.
func (m *Metrics) IncidentInTrouble(id string, inTrouble int) {
	im := &m.incidents
	if o := im.byID[id]; o != nil {
		im.inTrouble.WithLabelValues(o.label).Add(float64(inTrouble - o.inTrouble))
		o.inTrouble = inTrouble
	}
}

// Incident takes an incident record (the stage's Observe). It is called
// from the pipeline's goroutine only.
func (m *Metrics) Incident(inc *incident.Incident) {
	im := &m.incidents
	o := im.byID[inc.ID]
	if o == nil {
		label := inc.Peer.String()
		if _, ok := im.byLabel[label]; !ok && len(im.byLabel) >= MaxPeerSeries {
			label = otherPeers
		}
		o = &openIncident{label: label}
		im.byID[inc.ID] = o
		im.byLabel[label]++
		im.open.WithLabelValues(label).Set(float64(im.byLabel[label]))
	}
	im.inTrouble.WithLabelValues(o.label).Add(float64(inc.InTrouble - o.inTrouble))
	o.inTrouble = inc.InTrouble
	if inc.Phase != incident.Close {
		return
	}
	im.ended.WithLabelValues(string(inc.Outcome)).Inc()
	delete(im.byID, inc.ID)
	im.byLabel[o.label]--
	if im.byLabel[o.label] > 0 {
		im.open.WithLabelValues(o.label).Set(float64(im.byLabel[o.label]))
		im.inTrouble.WithLabelValues(o.label).Sub(float64(o.inTrouble))
		return
	}
	delete(im.byLabel, o.label)
	im.open.DeleteLabelValues(o.label)
	im.inTrouble.DeleteLabelValues(o.label)
}
