package output

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/engine"
)

// StatsRecord is the last record tcpwatch writes (`type: "stats"`): the
// run's engine.Stats, how much it saw and whether anything was lost.
type StatsRecord struct {
	Type       string         `json:"type"`
	Time       string         `json:"time"`
	Host       string         `json:"host"`
	Events     uint64         `json:"events"`
	Lost       uint64         `json:"lost"`
	Narratives map[string]int `json:"narratives"`
	Evictions  uint64         `json:"evictions"`
	Tracked    int            `json:"tracked"`
	// Reconciled counts connections dropped because the kernel's socket
	// table no longer had them: their end was among the lost records.
	Reconciled uint64 `json:"reconciled"`
	// Exposure counts the connections of the last exposure snapshot
	// (--exposure-every) by class (never, hours, minutes, seconds), and
	// ExposureByComm the same per process name; absent when none was taken.
	Exposure       map[string]int            `json:"exposure,omitempty"`
	ExposureByComm map[string]map[string]int `json:"exposure_by_comm,omitempty"`
}

// Stats writes the closing summary of a run.
func (w *Writer) Stats(st engine.Stats) error {
	s := StatsRecord{Type: "stats", Time: time.Now().Format(TimeLayout), Host: w.host, Events: st.Events, Lost: st.Lost,
		Narratives: st.Narratives, Evictions: st.Evictions, Tracked: st.Tracked, Reconciled: st.Reconciled,
		Exposure: w.exposure, ExposureByComm: w.exposureByComm}
	if s.Narratives == nil {
		s.Narratives = map[string]int{}
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
	if len(verdicts) > 0 {
		line += ", narratives: " + strings.Join(verdicts, " ")
	}
	if s.Evictions > 0 {
		line += fmt.Sprintf(", %d connections evicted from the tracker", s.Evictions)
	}
	if s.Reconciled > 0 {
		line += fmt.Sprintf(", %d connections whose end was lost dropped (gone from the kernel's socket table)", s.Reconciled)
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
}

// Loss reports lost kernel records.
func (w *Writer) Loss(lost engine.Loss) error {
	l := LossRecord{Type: "loss", Time: time.Now().Format(TimeLayout), Host: w.host,
		New: lost.New, Total: lost.Total, RingFull: lost.RingFull, Recursion: lost.Recursion}
	if w.format == JSON {
		return w.writeJSON(l)
	}
	w.line = fmt.Appendf(w.line[:0], "%s %-20s %d kernel records lost (%d in all: %d ring buffer full, %d programs skipped by recursion): stories told from now on may have gaps",
		time.Now().Format("15:04:05.000"), "records_lost", l.New, l.Total, l.RingFull, l.Recursion)
	return w.writeLine()
}
