package output

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
)

// StatsRecord is the last record tcpwatch writes (`type: "stats"`): the
// run's engine.Stats, how much it saw and whether anything was lost.
type StatsRecord struct {
	Type   string `json:"type"`
	Time   string `json:"time"`
	Host   string `json:"host"`
	Events uint64 `json:"events"`
	Lost   uint64 `json:"lost"`
	// Skipped is what the kernel half could not keep for want of room,
	// and so did not send (not part of Lost).
	Skipped    Skipped        `json:"skipped"`
	Narratives map[string]int `json:"narratives"`
	Evictions  uint64         `json:"evictions"`
	Tracked    int            `json:"tracked"`
	// Reconciled counts connections dropped because the kernel's socket
	// table no longer had them: their end was among the lost records.
	Reconciled uint64 `json:"reconciled"`
	// EndedUnseen counts connections dropped the same way whose end the
	// kernel reports by design to no one: healthy connections that predate
	// tcpwatch end without a record in default mode. Nothing was lost.
	EndedUnseen uint64 `json:"ended_unseen"`
	// EndsAtDeadline counts ends told at the kernel's deadline because
	// the kill's own records never arrived: narratives marked end_unseen,
	// kernel records missing that no kernel counter saw.
	EndsAtDeadline uint64 `json:"ends_at_deadline"`
	// Exposure counts the connections of the last exposure snapshot
	// (--exposure-every) by class (never, hours, minutes, seconds), and
	// ExposureByComm the same per process name; absent when none was taken.
	Exposure       map[string]int            `json:"exposure,omitempty"`
	ExposureByComm map[string]map[string]int `json:"exposure_by_comm,omitempty"`
	// Incidents counts the incidents (two or more connections to one peer
	// in trouble) closed, by outcome.
	Incidents map[string]int `json:"incidents"`
	// OTLP is what became of the records sent to a collector (--otlp).
	OTLP *OTLPStats `json:"otlp,omitempty"`
}

// Skipped are the kernel half's skips for want of room (the `skipped`
// object of `stats` and `loss`; tracer.Skipped).
type Skipped struct {
	// NoStorage: sockets whose storage could not be made (no memory):
	// never marked notable, their later uneventful records (the owner's
	// close, the destroy) were not sent in default mode.
	NoStorage uint64 `json:"no_storage"`
	// TroubledFull: marks of a connection in trouble refused, the map of
	// them being full: its drops were not joined to it.
	TroubledFull uint64 `json:"troubled_full"`
	// KeepaliveFull: keepalive probes not remembered, the map being
	// full: the peer's answer to them went untold.
	KeepaliveFull uint64 `json:"keepalive_full"`
	// SynackFull: listeners' SYN-ACK retransmissions not counted, the
	// map of listeners being full.
	SynackFull uint64 `json:"synack_full"`
}

func skippedOf(s tracer.Skipped) Skipped {
	return Skipped{NoStorage: s.NoStorage, TroubledFull: s.TroubledFull, KeepaliveFull: s.KeepaliveFull, SynackFull: s.SynackFull}
}

func (s Skipped) total() uint64 { return s.NoStorage + s.TroubledFull + s.KeepaliveFull + s.SynackFull }

// text says the skips in a few words: "3 sockets without storage, 2
// connections in trouble not marked, 1 keepalive probe not remembered".
func (s Skipped) text() string {
	var parts []string
	for _, p := range []struct {
		n    uint64
		what string
	}{
		{s.NoStorage, "socket%s without storage (no_storage: its end may not be sent)"},
		{s.TroubledFull, "mark%s of a connection in trouble refused (troubled_full: its drops not joined)"},
		{s.KeepaliveFull, "keepalive probe%s not remembered (keepalive_full: an answer to it not told)"},
		{s.SynackFull, "SYN-ACK retransmission%s not counted (synack_full: the map of listeners full)"},
	} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d "+p.what, p.n, plural(int(p.n))))
		}
	}
	return strings.Join(parts, ", ")
}

// OTLPStats count the OTLP export (the `otlp` object of `stats`).
type OTLPStats struct {
	// Emitted log records; Exported accepted by the collector; Failed
	// sent but refused or unanswered (retries included); Dropped never
	// sent: the queue was full, or still held them at exit.
	Emitted  uint64 `json:"emitted"`
	Exported uint64 `json:"exported"`
	Failed   uint64 `json:"failed"`
	Dropped  uint64 `json:"dropped"`
	// Metric exports attempted, and those that failed.
	MetricExports       uint64 `json:"metric_exports"`
	MetricExportsFailed uint64 `json:"metric_exports_failed"`
	LastError           string `json:"last_error,omitempty"`
}

// IncidentStats gives the stats record the incidents closed, by outcome
// (the incident stage's count).
func (w *Writer) IncidentStats(byOutcome map[string]int) { w.incidents = byOutcome }

// Stats writes the closing summary of a run.
func (w *Writer) Stats(st engine.Stats) error { return w.StatsWithOTLP(st, nil) }

// StatsWithOTLP writes the closing summary of a run that also sent its
// records to a collector (o: what became of them).
func (w *Writer) StatsWithOTLP(st engine.Stats, o *OTLPStats) error {
	s := StatsRecord{Type: "stats", Time: time.Now().Format(TimeLayout), Host: w.host, Events: st.Events, Lost: st.Lost, Skipped: skippedOf(st.Skipped),
		Narratives: st.Narratives, Evictions: st.Evictions, Tracked: st.Tracked, Reconciled: st.Reconciled,
		EndedUnseen: st.EndedUnseen, EndsAtDeadline: st.EndsAtDeadline, Exposure: w.exposure, ExposureByComm: w.exposureByComm, OTLP: o}
	if s.Narratives == nil {
		s.Narratives = map[string]int{}
	}
	s.Incidents = w.incidents
	if s.Incidents == nil {
		s.Incidents = map[string]int{}
	}
	if w.format == JSON {
		return w.writeJSON(s)
	}
	var verdicts []string
	for v, n := range s.Narratives {
		verdicts = append(verdicts, fmt.Sprintf("%s=%d", v, n))
	}
	sort.Strings(verdicts)
	line := fmt.Sprintf("stats: %d kernel events, %d lost", s.Events, s.Lost)
	if s.Lost > 0 {
		line += " (ring buffer full or programs skipped: raise --ring-size or narrow the filters)"
	}
	if s.Skipped.total() > 0 {
		line += ", kernel skips for want of room: " + s.Skipped.text()
	}
	if len(verdicts) > 0 {
		line += ", narratives: " + strings.Join(verdicts, " ")
	}
	if len(s.Incidents) > 0 {
		var outcomes []string
		for o, n := range s.Incidents {
			outcomes = append(outcomes, fmt.Sprintf("%s=%d", o, n))
		}
		sort.Strings(outcomes)
		line += ", incidents: " + strings.Join(outcomes, " ")
	}
	if s.Evictions > 0 {
		line += fmt.Sprintf(", %d connections evicted from the tracker", s.Evictions)
	}
	if o := s.OTLP; o != nil {
		line += fmt.Sprintf(", OTLP: %d log records sent, %d failed, %d dropped; %d of %d metric exports failed",
			o.Exported, o.Failed, o.Dropped, o.MetricExportsFailed, o.MetricExports)
		if o.LastError != "" {
			line += " (last error: " + o.LastError + ")"
		}
	}
	if s.Reconciled > 0 {
		line += fmt.Sprintf(", %d connections whose end was lost dropped (gone from the kernel's socket table)", s.Reconciled)
	}
	if s.EndsAtDeadline > 0 {
		line += fmt.Sprintf(", %d connections whose end was told at the kernel's deadline (end_unseen: the kill's records never arrived, and no kernel counter saw them go)", s.EndsAtDeadline)
	}
	if s.EndedUnseen > 0 {
		line += fmt.Sprintf(", %d connections from before tcpwatch ended unseen (by design: in default mode the kernel reports no normal end of a connection it did not see begin)", s.EndedUnseen)
	}
	if s.Exposure != nil {
		line += ", exposure (when a silent peer would be noticed):"
		for _, c := range []string{"never", "hours", "minutes", "seconds"} {
			line += fmt.Sprintf(" %s=%d", c, s.Exposure[c])
		}
	}
	w.line = append(w.line[:0], line...)
	return w.writeLine()
}

// SetExposure gives the stats record the counts of the last exposure
// snapshot: by class, and by process name and class.
func (w *Writer) SetExposure(total map[string]int, byComm map[string]map[string]int) {
	w.exposure, w.exposureByComm = total, byComm
}

// LossRecord is written while running whenever the kernel reports records
// it could not deliver (`type: "loss"`): a story told after it may have a
// hole, and its narrative says so (`lost_records`).
type LossRecord struct {
	Type      string `json:"type"`
	Time      string `json:"time"`
	Host      string `json:"host"`
	New       uint64 `json:"new"`
	Total     uint64 `json:"total"`
	RingFull  uint64 `json:"ring_full"`
	Recursion uint64 `json:"recursion"`
	// Skipped are the kernel half's skips so far, NewSkipped what they
	// add since the last report.
	Skipped    Skipped `json:"skipped"`
	NewSkipped uint64  `json:"new_skipped"`
}

// Loss reports lost kernel records.
func (w *Writer) Loss(lost engine.Loss) error {
	l := LossRecord{Type: "loss", Time: time.Now().Format(TimeLayout), Host: w.host,
		New: lost.New, Total: lost.Total, RingFull: lost.RingFull, Recursion: lost.Recursion,
		Skipped: skippedOf(lost.Skipped), NewSkipped: lost.NewSkipped}
	if w.format == JSON {
		return w.writeJSON(l)
	}
	w.line = fmt.Appendf(w.line[:0], "%s %-20s ", time.Now().Format("15:04:05.000"), "records_lost")
	if l.New > 0 {
		w.line = fmt.Appendf(w.line, "%d kernel records lost (%d in all: %d ring buffer full, %d programs skipped by recursion): stories told from now on may have gaps",
			l.New, l.Total, l.RingFull, l.Recursion)
	}
	if l.NewSkipped > 0 {
		if l.New > 0 {
			w.line = append(w.line, "; "...)
		}
		w.line = fmt.Appendf(w.line, "%d kernel skips for want of room (in all: %s): stories told from now on may miss parts",
			l.NewSkipped, l.Skipped.text())
	}
	return w.writeLine()
}
