package output

import (
	"fmt"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/exposure"
)

// ExposureRecord is one connection of `tcpwatch exposure -o json`
// (`type: "exposure"`): when its kernel would notice the peer vanishing,
// and the settings that decide it, read from the socket.
type ExposureRecord struct {
	Type      string `json:"type"`
	Time      string `json:"time"`
	Host      string `json:"host"`
	NetNS     uint32 `json:"netns"`
	Cookie    uint64 `json:"cookie"`
	Local     string `json:"local"`
	Remote    string `json:"remote"`
	Inbound   bool   `json:"inbound"` // accepted by a listener on the local port
	State     string `json:"state"`
	PID       uint32 `json:"pid"`
	Comm      string `json:"comm"`
	Container string `json:"container,omitempty"`
	Pod       string `json:"pod_uid,omitempty"`
	Cgroup    string `json:"cgroup,omitempty"`
	UID       uint32 `json:"uid"`
	Orphan    bool   `json:"orphan"`

	IdleMs          int64  `json:"idle_ms"`              // since the peer was last heard
	UnackedBytes    uint32 `json:"unacked_bytes"`        // sent, not acknowledged
	UnsentBytes     uint32 `json:"unsent_bytes"`         // written, not sent
	UnreadBytes     uint32 `json:"unread_bytes"`         // received, not read by the application
	Retransmits     uint8  `json:"retransmits"`          // icsk_retransmits now
	KeepaliveProbes uint8  `json:"keepalive_probes_out"` // icsk_probes_out now

	Class           string `json:"class"`             // never, hours, minutes, seconds: the worse of the two below
	IdleDetectMs    *int64 `json:"idle_detect_ms"`    // null: never
	IdleDetectBy    string `json:"idle_detect_by"`    // none, keepalive, tcp_fin_timeout, ...
	SendingDetectMs *int64 `json:"sending_detect_ms"` // from the first retransmission
	SendingDetectBy string `json:"sending_detect_by"` // tcp_retries2, user_timeout, tcp_orphan_retries
	Why             string `json:"why"`

	Settings ExposureSettings `json:"settings"`
}

// ExposureSettings are the settings an assessment came from; *_from says
// whether the socket set it or its namespace's sysctl decided.
type ExposureSettings struct {
	Keepalive           bool   `json:"keepalive"`
	KeepaliveIdleMs     int64  `json:"keepalive_idle_ms"`
	KeepaliveIdleFrom   string `json:"keepalive_idle_from"`
	KeepaliveIntvlMs    int64  `json:"keepalive_intvl_ms"`
	KeepaliveIntvlFrom  string `json:"keepalive_intvl_from"`
	KeepaliveCount      uint8  `json:"keepalive_count"`
	KeepaliveCountFrom  string `json:"keepalive_count_from"`
	UserTimeoutMs       int64  `json:"user_timeout_ms"` // 0: unset
	RTOMinMs            int64  `json:"rto_min_ms,omitempty"`
	RTOMaxMs            int64  `json:"rto_max_ms"`
	RTOMaxFrom          string `json:"rto_max_from"`
	Retries2            uint8  `json:"tcp_retries2"`
	OrphanRetries       uint8  `json:"tcp_orphan_retries"`
	NetKeepaliveTimeMs  int64  `json:"tcp_keepalive_time_ms"`
	NetKeepaliveIntvlMs int64  `json:"tcp_keepalive_intvl_ms"`
	NetKeepaliveProbes  uint8  `json:"tcp_keepalive_probes"`
}

// ExposureSummaryRecord closes `tcpwatch exposure -o json`
// (`type: "exposure_summary"`).
type ExposureSummaryRecord struct {
	Type        string         `json:"type"`
	Time        string         `json:"time"`
	Host        string         `json:"host"`
	Connections int            `json:"connections"`
	Classes     map[string]int `json:"classes"`
	TimeWait    int            `json:"time_wait"`
	Listening   int            `json:"listening"`
	Namespaces  int            `json:"namespaces"`
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

func detectMs(d exposure.Detection) *int64 {
	if d.Never {
		return nil
	}
	v := ms(d.After)
	return &v
}

// NewExposureRecord is the JSON form of one assessed connection.
func NewExposureRecord(c *exposure.Connection, at time.Time, host string) ExposureRecord {
	st := &c.Settings
	a := c.Assessment
	return ExposureRecord{
		Type: "exposure", Time: at.Format(TimeLayout), Host: host,
		NetNS: c.NetNS, Cookie: c.Cookie, Local: c.Local.String(), Remote: c.Remote.String(),
		Inbound: c.Peer.Inbound, State: c.State.String(), PID: c.PID, Comm: c.Comm,
		Container: c.Container.ID, Pod: c.Container.PodUID, Cgroup: c.Container.Path,
		UID: c.UID, Orphan: c.Orphan,
		IdleMs: ms(c.Idle), UnackedBytes: c.Unacked, UnsentBytes: c.Unsent, UnreadBytes: c.Unread,
		Retransmits: c.Retransmits, KeepaliveProbes: c.ProbesOut,
		Class:        a.Class.String(),
		IdleDetectMs: detectMs(a.Idle), IdleDetectBy: string(a.Idle.By),
		SendingDetectMs: detectMs(a.Sending), SendingDetectBy: string(a.Sending.By),
		Why: words.ExposureWhy(c),
		Settings: ExposureSettings{
			Keepalive:       st.Keepalive,
			KeepaliveIdleMs: ms(st.KeepaliveIdle), KeepaliveIdleFrom: string(st.KeepaliveIdleFrom),
			KeepaliveIntvlMs: ms(st.KeepaliveIntvl), KeepaliveIntvlFrom: string(st.KeepaliveIntvlFrom),
			KeepaliveCount: st.KeepaliveCount, KeepaliveCountFrom: string(st.KeepaliveCountFrom),
			UserTimeoutMs: ms(st.UserTimeout), RTOMinMs: ms(st.RTOMin),
			RTOMaxMs: ms(st.RTOMax), RTOMaxFrom: string(st.RTOMaxFrom),
			Retries2: st.Retries2, OrphanRetries: st.OrphanRetries,
			NetKeepaliveTimeMs: ms(st.NetKeepaliveIdle), NetKeepaliveIntvlMs: ms(st.NetKeepaliveIntvl),
			NetKeepaliveProbes: st.NetKeepaliveCount,
		},
	}
}

// Exposure writes a report: in JSON one record per connection, worst
// first, then a summary; in text one line per group of connections (one
// process, one peer, the same settings), worst first, then the tallies by
// process and by peer.
func (w *Writer) Exposure(r *exposure.Report, at time.Time) error {
	if w.format == JSON {
		for _, c := range r.Connections {
			if err := w.writeJSON(NewExposureRecord(c, at, w.host)); err != nil {
				return err
			}
		}
		classes := map[string]int{}
		for _, c := range exposure.Classes {
			classes[c.String()] = r.Tally[c]
		}
		return w.writeJSON(ExposureSummaryRecord{Type: "exposure_summary", Time: at.Format(TimeLayout), Host: w.host,
			Connections: len(r.Connections), Classes: classes, TimeWait: r.TimeWait, Listening: r.Listening, Namespaces: r.Namespaces})
	}
	if err := w.Line(ExposureHeadline(r)); err != nil {
		return err
	}
	for _, g := range r.Groups {
		if err := w.Line(ExposureGroupLine(g)); err != nil {
			return err
		}
	}
	for _, p := range r.ByProcess {
		if err := w.Line(fmt.Sprintf("by process  %s: %s", ownerText(p.PID, p.Comm, p.Container), TallyText(p.Tally))); err != nil {
			return err
		}
	}
	for _, p := range r.ByPeer {
		if err := w.Line(fmt.Sprintf("by peer     %s: %s", peerText(p.Peer), TallyText(p.Tally))); err != nil {
			return err
		}
	}
	return nil
}

// ExposureHeadline is the text report's first line.
func ExposureHeadline(r *exposure.Report) string {
	return fmt.Sprintf("exposure: %d connection%s in %d network namespace%s, by when their kernel would notice a silent peer: %s (also %d in TIME_WAIT, %d listening)",
		len(r.Connections), plural(len(r.Connections)), r.Namespaces, plural(r.Namespaces), TallyText(r.Tally), r.TimeWait, r.Listening)
}

// TallyText is "never=20 hours=3": the classes with connections, worst first.
func TallyText(t exposure.Tally) string {
	var parts []string
	for _, c := range exposure.Classes {
		if t[c] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", c, t[c]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// ExposureGroupLine is one text line: class first, the connections next,
// the kernel's reason last.
func ExposureGroupLine(g *exposure.Group) string {
	c := g.First()
	n := len(g.Connections)
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s %s", c.Assessment.Class, ownerText(c.PID, c.Comm, c.Container.Short()))
	if n == 1 {
		fmt.Fprintf(&b, " %s %s", c.Local, arrow(c))
	} else {
		fmt.Fprintf(&b, " %d connections %s", n, arrow(c))
	}
	fmt.Fprintf(&b, " %s netns=%d", c.State, c.NetNS)
	if g.IdleMin == g.IdleMax {
		fmt.Fprintf(&b, " idle %s", words.Secs(g.IdleMin.Truncate(time.Millisecond)))
	} else {
		fmt.Fprintf(&b, " idle %s–%s", words.Secs(g.IdleMin), words.Secs(g.IdleMax))
	}
	var unacked uint64
	for _, m := range g.Connections {
		unacked += uint64(m.Unacked)
	}
	fmt.Fprintf(&b, " unacked=%d: %s", unacked, words.ExposureWhy(c))
	return b.String()
}

func arrow(c *exposure.Connection) string {
	if c.Peer.Inbound {
		return fmt.Sprintf("← %s (client of :%d)", c.Remote.Addr(), c.Peer.Port)
	}
	return "→ " + c.Remote.String()
}

func peerText(p exposure.Peer) string {
	if p.Inbound {
		return fmt.Sprintf("%s (client of :%d)", p.Addr, p.Port)
	}
	return fmt.Sprintf("%s:%d", p.Addr, p.Port)
}

func ownerText(pid uint32, comm, container string) string {
	s := "(no process)"
	if pid != 0 {
		s = fmt.Sprintf("%s[%d]", Sanitize(comm), pid)
	}
	if container != "" {
		s += " container=" + container
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
