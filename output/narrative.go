package output

import (
	"fmt"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// NarrativeRecord is the JSON form of a narrative (`type: "narrative"`).
// Its fields are a stable schema, documented in docs/json.md.
type NarrativeRecord struct {
	Type    string `json:"type"`
	Time    string `json:"time"`
	Host    string `json:"host"`
	Verdict string `json:"verdict"`
	Final   bool   `json:"final"`
	// IncidentID names the incident the connection is part of ("" alone).
	IncidentID string `json:"incident_id"`
	ConnFields
	OwnerSource string  `json:"owner_source"`
	Inode       uint32  `json:"inode"`
	State       string  `json:"state"`
	Orphan      bool    `json:"orphan"`
	Errno       string  `json:"errno"`
	ResetReason string  `json:"reset_reason"`
	Retransmits int     `json:"retransmits"`
	FailedSends int     `json:"failed_sends"`
	Probes      int     `json:"probes"`
	OutageMs    int64   `json:"outage_ms"`
	GiveUpInMs  int64   `json:"giveup_in_ms"`
	RTOsMs      []int64 `json:"rtos_ms"`
	BudgetMs    int64   `json:"budget_ms"`
	BudgetBy    string  `json:"budget_setting"`
	ExitSignal  int     `json:"exit_signal"`
	ExitStatus  int     `json:"exit_status"`
	SentReset   bool    `json:"sent_reset"`
	LostRecords bool    `json:"lost_records"`
	// A final the kernel's deadline decided, its records of the end
	// never seen (tracker.Narrative.EndUnseen).
	EndUnseen bool `json:"end_unseen,omitempty"`
	// The other end of the connection, where this host has it too: its
	// verdict, namespace and how long before this one it ended.
	PeerVerdict       string `json:"peer_verdict"`
	PeerNetNS         uint32 `json:"peer_netns"`
	PeerEndedMsBefore int64  `json:"peer_ended_ms_before"`
	// close_wait_stuck only: the sockets its peers closed that the
	// process holds (at the end, the most it held), how long the oldest
	// has been in CLOSE_WAIT, and whether the process exited.
	CloseWaitSockets int   `json:"close_wait_sockets,omitempty"`
	CloseWaitMs      int64 `json:"close_wait_ms,omitempty"`
	CloseWaitExited  bool  `json:"close_wait_exited,omitempty"`
	// local_ports_exhausted only, when the socket table could be read:
	// the sockets to the destination (TIME_WAIT and other), the port
	// range and tcp_tw_reuse of the namespace.
	Ports *PortsRecord `json:"ports,omitempty"`
	// Where the episode's packets died (with the drop program attached)
	// and the window-probe timer's episode: omitted when they do not apply.
	Drops        []DropRecord `json:"drops,omitempty"`
	LeftHost     *int         `json:"left_host,omitempty"`
	WindowProbes int          `json:"window_probes,omitempty"`
	PeerWindow   *uint32      `json:"peer_window,omitempty"`
	NotSent      uint32       `json:"notsent_bytes,omitempty"`
	Endless      bool         `json:"endless,omitempty"`
	// accept_queue_overflow: the listener's accept queue and what it turned away.
	QueueLen   uint32 `json:"queue_len,omitempty"`
	QueueLimit uint32 `json:"queue_limit,omitempty"`
	TurnedAway int    `json:"turned_away,omitempty"`
	// accept_queue_overflow, synack_unanswered: the listener's SYN queue,
	// SYN-ACK retransmissions and its namespace's SYN cookies.
	Listener    *ListenerRecord `json:"listener,omitempty"`
	Summary     string          `json:"summary"`
	Explanation string          `json:"explanation"`
	Timeline    []TimelineStep  `json:"timeline"`
	Settings    SettingsRecord  `json:"settings"`
}

// DropRecord counts one kind of drop of an episode's packets on this host.
type DropRecord struct {
	Direction string `json:"direction"`      // "out": sent by this side; "in": from the peer
	Reason    string `json:"reason"`         // as the kernel names it: NETFILTER_DROP, NEIGH_FAILED, ...
	Hook      string `json:"hook,omitempty"` // NETFILTER_DROP: OUTPUT, INPUT, PREROUTING, POSTROUTING
	// Elsewhere: in another network namespace of this kernel than the connection's.
	Elsewhere bool `json:"elsewhere,omitempty"`
	// Site: the kernel function that freed it, when it says why and the
	// reason does not (inet6_csk_xmit: IPv6's route lookup failed).
	Site  string `json:"site,omitempty"`
	Count int    `json:"count"`
}

// TimelineStep is one kernel event in a narrative's timeline.
type TimelineStep struct {
	TMs   int64  `json:"t_ms"`
	Event string `json:"event"`
}

// NewNarrativeRecord builds the JSON form of n, whose connection's cgroup
// names cg (Community ID seed 0).
func NewNarrativeRecord(n *tracker.Narrative, cg containers.Info) NarrativeRecord {
	return NewNarrativeRecordSeeded(n, cg, 0)
}

// NewNarrativeRecordSeeded is NewNarrativeRecord with a Community ID seed.
func NewNarrativeRecordSeeded(n *tracker.Narrative, cg containers.Info, seed uint16) NarrativeRecord {
	r := NarrativeRecord{
		Type:             "narrative",
		Time:             n.Time.Format(TimeLayout),
		Verdict:          string(n.Verdict),
		Final:            n.Final,
		IncidentID:       n.Incident,
		ConnFields:       connFields(seed, n.Cookie, n.Local, n.Remote, n.NetNS, n.Owner.PID, n.Owner.Comm, n.Owner.Thread),
		OwnerSource:      n.Owner.Source.String(),
		Inode:            n.Inode,
		State:            n.State.String(),
		Orphan:           n.Orphan,
		Errno:            tcp.ErrnoName(n.Errno),
		ResetReason:      n.ResetReason,
		Retransmits:      n.Retransmits,
		FailedSends:      n.FailedSends,
		Probes:           n.Probes,
		OutageMs:         n.Outage.Milliseconds(),
		GiveUpInMs:       n.GiveUpIn.Milliseconds(),
		RTOsMs:           make([]int64, len(n.RTOs)),
		BudgetMs:         n.Budget.Limit.Milliseconds(),
		BudgetBy:         n.Budget.Setting,
		ExitSignal:       n.ExitSignal,
		ExitStatus:       n.ExitStatus,
		SentReset:        n.SentReset,
		LostRecords:      n.LostRecords,
		EndUnseen:        n.EndUnseen,
		CloseWaitSockets: n.CloseWaitSockets,
		CloseWaitMs:      n.CloseWaitFor.Milliseconds(),
		CloseWaitExited:  n.CloseWaitExited,
		Ports:            newPortsRecord(n.Ports),
		Summary:          words.Summary(n),
		Explanation:      explanationOnce(n),
		Timeline:         make([]TimelineStep, len(n.Timeline)),
		Settings:         NewSettingsRecord(n.Settings, n.RTOMax),
	}
	r.setCgroup(cg)
	if p := n.PeerEnd; p != nil {
		r.PeerVerdict, r.PeerNetNS, r.PeerEndedMsBefore = string(p.Verdict), p.NetNS, p.Before.Milliseconds()
	}
	for _, d := range n.Drops {
		r.Drops = append(r.Drops, DropRecord{Direction: d.Direction(), Reason: d.Reason, Hook: d.Hook, Elsewhere: d.Elsewhere, Site: d.Site, Count: d.Count})
	}
	if n.DropsSeen && (n.Retransmits > 0 || n.WindowProbes > 0) {
		left := n.LeftHost
		r.LeftHost = &left
	}
	if n.WindowProbes > 0 {
		r.WindowProbes, r.NotSent, r.Endless = n.WindowProbes, n.NotSent, n.Endless
		wnd := n.PeerWindow
		r.PeerWindow = &wnd
	}
	r.QueueLen, r.QueueLimit, r.TurnedAway = n.QueueLen, n.QueueLimit, n.TurnedAway
	r.Listener = newListenerRecord(n)
	for i, d := range n.RTOs {
		r.RTOsMs[i] = d.Milliseconds()
	}
	for i, s := range n.Timeline {
		r.Timeline[i] = TimelineStep{TMs: s.At.Milliseconds(), Event: words.Step(&n.Timeline[i])}
	}
	return r
}

// explanationOnce is a narrative's explanation, except on the later
// narratives of a stalled or keepalive_probing episode: its first gave
// it, and the later ones only bring new figures.
func explanationOnce(n *tracker.Narrative) string {
	if (n.Verdict == tracker.Stalled || n.Verdict == tracker.KeepaliveProbing) && !n.Begins && !n.Final {
		return ""
	}
	return words.Explanation(n)
}

const (
	ansiReset  = "\x1b[0m"
	ansiRed    = "\x1b[1;31m"
	ansiYellow = "\x1b[1;33m"
	ansiGreen  = "\x1b[1;32m"
)

// colorOf is a verdict's colour, by its severity in the registry.
var colorOf = map[words.Severity]string{words.Normal: ansiGreen, words.Warning: ansiYellow, words.Failure: ansiRed}

// Narrative writes one narrative: in text, one line with the verdict first,
// then the connection, its owner, the evidence, and the summary last.
func (w *Writer) Narrative(n *tracker.Narrative, cg containers.Info) error {
	if w.format == JSON {
		if w.schema == SchemaV2 {
			rec := NewNarrativeRecordSeeded(n, cg, w.seed)
			rec.Host = w.host
			w.line = appendV2(w.line[:0], rec.Type, rec.Time, VerdictSeverity(n.Verdict), rec.Summary, NarrativeAttrs(&rec, n, w.explain))
			return w.writeLine()
		}
		if !w.explain && Lifecycle(n) {
			w.line = appendLifecycleLine(w.line[:0], n, cg, w.host, w.seed, &w.ids)
			return w.writeLine()
		}
		// A listener's narrative carries its own incident's id (one per
		// listener and episode) and no incident record speaks for it.
		if n.Incident != "" && !w.connections && n.State != tcp.StateListen {
			w.line = appendFoldedNarrativeJSON(w.line[:0], w.host, n, cg, w.seed)
			return w.writeLine()
		}
		rec := NewNarrativeRecordSeeded(n, cg, w.seed)
		rec.Host = w.host
		w.line = appendNarrativeJSON(w.line[:0], &rec)
		return w.writeLine()
	}
	w.line = w.AppendNarrativeText(w.line[:0], n, cg)
	return w.writeLine()
}

// AppendNarrativeText appends the text form of n (without a newline).
func (w *Writer) AppendNarrativeText(b []byte, n *tracker.Narrative, cg containers.Info) []byte {
	b = n.Time.AppendFormat(b, "15:04:05.000 ")
	verdict := string(n.Verdict)
	if !n.Final && !n.Verdict.Episode() {
		verdict += "?"
	}
	if w.color {
		b = fmt.Appendf(b, "%s%-20s%s", colorOf[words.SeverityOf(n.Verdict)], verdict, ansiReset)
	} else {
		b = fmt.Appendf(b, "%-20s", verdict)
	}
	b = fmt.Appendf(b, " %s -> %s", n.Local, n.Remote)
	b = appendOwner(b, n.Owner.PID, n.Owner.Comm, n.Owner.Thread)
	if n.Owner.Source == wire.OwnerListener {
		b = append(b, " (listener)"...)
	}
	b = appendContainer(b, cg)
	b = append(b, evidence(n)...)
	b = append(b, " | "...)
	b = append(b, Sanitize(words.Summary(n))...)
	if w.explain {
		b = append(b, "\n    why: "...)
		b = append(b, Sanitize(words.Explanation(n))...)
	}
	return b
}

func evidence(n *tracker.Narrative) string {
	var parts []string
	if n.Retransmits > 0 {
		parts = append(parts, fmt.Sprintf("retrans=%d", n.Retransmits))
	}
	if n.Probes > 0 {
		parts = append(parts, fmt.Sprintf("probes=%d/%d", n.Probes, n.Settings.KeepaliveProbes))
	}
	if n.Outage > 0 {
		parts = append(parts, "outage="+words.Secs(n.Outage))
	}
	if n.GiveUpIn > 0 {
		parts = append(parts, "giveup_in="+words.Secs(n.GiveUpIn))
	}
	if n.Errno != 0 {
		parts = append(parts, "errno="+tcp.ErrnoName(n.Errno))
	}
	if n.ResetReason != "" {
		parts = append(parts, "rst="+n.ResetReason)
	}
	if n.ExitSignal != 0 {
		parts = append(parts, fmt.Sprintf("signal=%d", n.ExitSignal))
	}
	if p := n.Ports; p.Failures > 1 {
		parts = append(parts, fmt.Sprintf("failures=%d", p.Failures))
	}
	if p := n.Ports; p.Known {
		parts = append(parts, fmt.Sprintf("time_wait=%d other=%d ports=%d-%d tw_reuse=%d", p.TimeWait, p.Other, p.RangeLo, p.RangeHi, p.TwReuse))
	}
	if n.CloseWaitSockets > 0 {
		parts = append(parts, fmt.Sprintf("close_wait=%d for=%s", n.CloseWaitSockets, words.Secs(n.CloseWaitFor)))
	}
	if n.TurnedAway > 0 || n.Cause != "" {
		parts = append(parts, fmt.Sprintf("queue=%d/%d turned_away=%d", n.QueueLen, n.QueueLimit, n.TurnedAway))
	}
	if n.SynackRetransmits > 0 {
		parts = append(parts, fmt.Sprintf("synack_retransmits=%d clients=%d acked=%d syn_queue=%d", n.SynackRetransmits,
			n.SynackClients, n.SynackAcked, n.SynQueueLen))
	}
	if n.CookiesSent > 0 {
		parts = append(parts, fmt.Sprintf("cookies_sent=%d", n.CookiesSent))
	}
	if n.WindowProbes > 0 {
		parts = append(parts, fmt.Sprintf("window_probes=%d wnd=%d notsent=%d", n.WindowProbes, n.PeerWindow, n.NotSent))
	}
	if out := n.DroppedOut(); out > 0 {
		parts = append(parts, fmt.Sprintf("dropped_here=%d", out))
	}
	if in := n.DroppedIn(); in > 0 {
		parts = append(parts, fmt.Sprintf("replies_dropped_here=%d", in))
	}
	if n.LostRecords {
		parts = append(parts, "records_lost")
	}
	if n.EndUnseen {
		parts = append(parts, "end_unseen")
	}
	if len(parts) == 0 {
		return ""
	}
	return " " + strings.Join(parts, " ")
}

// NoticeRecord is the JSON form of a notice: `type: "event"` with a `kind`
// that no kernel event has (`time_wait_reuse`).
type NoticeRecord struct {
	Type string `json:"type"`
	Time string `json:"time"`
	Host string `json:"host"`
	Kind string `json:"kind"`
	ConnFields
	Summary string `json:"summary"`
	// Explanation is left out of the JSON of a routine notice by default
	// (RoutineNotice), as a normal lifecycle's (Lifecycle): --all tells
	// those at a churning host's rate (a TIME_WAIT 4-tuple reopened, up to
	// one a connection), and the explanation was two thirds of a ~1 KB
	// line and of its rendering; --explain (and the v2 schema) give it.
	Explanation string `json:"explanation,omitempty"`
	// TimeWait: the kernel's figures of a time_wait_syn_rejected,
	// time_wait_rst_ended or time_wait_rst_ignored notice.
	TimeWait *TimeWaitRecord `json:"time_wait,omitempty"`
	// ResetReason: syn_answered_old_ack's reset, as the kernel names it.
	ResetReason string `json:"reset_reason,omitempty"`
	// CauseUnseen: a time_wait_syn_accepted on a kernel before 6.11,
	// which cannot show whether the SYN was newer than the old connection
	// or an RST had ended the TIME_WAIT first (tracker.Notice.CauseUnseen).
	CauseUnseen bool `json:"cause_unseen,omitempty"`
}

// TimeWaitRecord is what a SYN or RST met in TIME_WAIT (docs/json.md).
type TimeWaitRecord struct {
	Seq      uint32 `json:"seq"`         // the segment's sequence number
	RcvNxt   uint32 `json:"rcv_nxt"`     // tw_rcv_nxt: what the old connection expected next
	SeqAhead int32  `json:"seq_ahead"`   // seq - rcv_nxt, modulo 2^32 (negative: behind)
	TSval    uint32 `json:"tsval"`       // the segment's timestamp, 0 without one
	TSRecent uint32 `json:"ts_recent"`   // the peer's last timestamp the TIME_WAIT kept, 0 when it keeps none
	Answered bool   `json:"answered"`    // a rejected SYN: the old connection's ACK went out
	RFC1337  bool   `json:"tcp_rfc1337"` // the namespace's net.ipv4.tcp_rfc1337
	LeftMs   int64  `json:"left_ms"`     // how long the TIME_WAIT still had to run
	ClosedMs int64  `json:"closed_ms"`   // since the close that left it, 0 unknown
}

func newTimeWaitRecord(n *tracker.Notice) *TimeWaitRecord { return timeWaitRecord(&n.TimeWait, n.Age) }

func timeWaitRecord(f *wire.TimeWaitFacts, closed time.Duration) *TimeWaitRecord {
	if f.Seen == 0 {
		return nil
	}
	_, ahead := f.SeqNewer()
	r := &TimeWaitRecord{Seq: f.Seq, RcvNxt: f.RcvNxt, SeqAhead: ahead, Answered: f.Seen == wire.TimeWaitSynAnswered,
		RFC1337: f.RFC1337, LeftMs: f.Left.Milliseconds(), ClosedMs: closed.Milliseconds()}
	if f.HasTSval {
		r.TSval = f.TSval
	}
	if f.PAWS {
		r.TSRecent = f.TSRecent
	}
	return r
}

// NewNoticeRecord builds the JSON form of n, whose connection's cgroup
// names cg (Community ID seed 0).
func NewNoticeRecord(n *tracker.Notice, cg containers.Info) NoticeRecord {
	return NewNoticeRecordSeeded(n, cg, 0)
}

// NewNoticeRecordSeeded is NewNoticeRecord with a Community ID seed.
func NewNoticeRecordSeeded(n *tracker.Notice, cg containers.Info, seed uint16) NoticeRecord {
	r := NoticeRecord{Type: "event", Time: n.Time.Format(TimeLayout), Kind: n.Kind,
		ConnFields: connFields(seed, n.Cookie, n.Local, n.Remote, n.NetNS, n.Owner.PID, n.Owner.Comm, n.Owner.Thread),
		Summary:    words.NoticeSummary(n), Explanation: words.NoticeExplanation(n), TimeWait: newTimeWaitRecord(n),
		ResetReason: n.ResetReason, CauseUnseen: n.CauseUnseen}
	r.setCgroup(cg)
	return r
}

// RoutineNotice reports whether n is routine on a churning host, its JSON
// explanation then left for --explain: a TIME_WAIT 4-tuple taken over by a
// new connection (time_wait_reuse, time_wait_syn_accepted), up to one a
// connection where clients churn through one server port.
func RoutineNotice(n *tracker.Notice) bool {
	return n.Kind == "time_wait_reuse" || n.Kind == "time_wait_syn_accepted"
}

// Notice writes a notice (shown with --all).
func (w *Writer) Notice(n *tracker.Notice, cg containers.Info) error {
	if w.format == JSON {
		if w.schema == SchemaV2 {
			rec := NewNoticeRecordSeeded(n, cg, w.seed)
			rec.Host = w.host
			w.line = appendV2(w.line[:0], rec.Type, rec.Time, SeverityInfo, rec.Summary, Attrs(&rec))
			return w.writeLine()
		}
		if n.TimeWait.Seen == 0 && n.ResetReason == "" {
			w.line = appendNoticeLine(w.line[:0], n, cg, w.host, w.seed, &w.ids, w.explain)
			return w.writeLine()
		}
		rec := NoticeRecord{Type: "event", Time: n.Time.Format(TimeLayout), Host: w.host, Kind: n.Kind,
			ConnFields: connFields(w.seed, n.Cookie, n.Local, n.Remote, n.NetNS, n.Owner.PID, n.Owner.Comm, n.Owner.Thread),
			Summary:    words.NoticeSummary(n), TimeWait: newTimeWaitRecord(n), ResetReason: n.ResetReason, CauseUnseen: n.CauseUnseen}
		rec.setCgroup(cg)
		if w.explain || !RoutineNotice(n) {
			rec.Explanation = words.NoticeExplanation(n)
		}
		if rec.TimeWait != nil || rec.ResetReason != "" {
			return w.writeJSON(rec) // rare: the kernel's TIME_WAIT figures
		}
		w.line = appendNoticeJSON(w.line[:0], &rec)
		return w.writeLine()
	}
	w.line = w.AppendNoticeText(w.line[:0], n, cg)
	return w.writeLine()
}

// AppendNoticeText appends the text form of a notice.
func (w *Writer) AppendNoticeText(b []byte, n *tracker.Notice, cg containers.Info) []byte {
	b = n.Time.AppendFormat(b, "15:04:05.000 ")
	b = fmt.Appendf(b, "%-20s %s -> %s", n.Kind, n.Local, n.Remote)
	b = appendOwner(b, n.Owner.PID, n.Owner.Comm, n.Owner.Thread)
	b = appendContainer(b, cg)
	b = append(b, " | "...)
	b = append(b, Sanitize(words.NoticeSummary(n))...)
	if w.explain {
		b = append(b, "\n    why: "...)
		b = append(b, Sanitize(words.NoticeExplanation(n))...)
	}
	return b
}

// PortsRecord is what held the local ports (local_ports_exhausted).
type PortsRecord struct {
	Failures    int `json:"failures"` // connect() calls this narrative tells (later ones are folded for 10 s)
	TimeWait    int `json:"time_wait"`
	Other       int `json:"other"`
	TimeWaitAll int `json:"time_wait_all"`
	RangeLo     int `json:"range_lo"`
	RangeHi     int `json:"range_hi"`
	TwReuse     int `json:"tcp_tw_reuse"`
}

func newPortsRecord(p tracker.PortUse) *PortsRecord {
	if !p.Known && p.Failures == 0 {
		return nil
	}
	return &PortsRecord{Failures: p.Failures, TimeWait: p.TimeWait, Other: p.Other, TimeWaitAll: p.TimeWaitAll,
		RangeLo: p.RangeLo, RangeHi: p.RangeHi, TwReuse: p.TwReuse}
}

// ListenerRecord is what a listener's episode adds beyond its accept
// queue (queue_len, queue_limit, turned_away): what it points at, its
// SYN-ACK retransmissions and SYN queue, and its namespace's SYN cookies.
type ListenerRecord struct {
	Cause             string `json:"cause"`              // not_accepting, backlog_too_small, syn_flood, handshakes_unanswered
	SynackRetransmits int    `json:"synack_retransmits"` // SYN-ACKs retransmitted since the episode began
	SynackClients     int    `json:"synack_clients"`     // ... to clients that never answered
	SynackAcked       int    `json:"synack_acked"`       // ... to clients whose ACK found the accept queue full
	SynQueue          uint32 `json:"syn_queue"`          // request sockets at the last retransmission
	SynQueueMax       uint32 `json:"syn_queue_max"`
	// Syncookies is the namespace's tcp_syncookies (absent: unknown);
	// CookiesSent and SynQueueFullDrops its SyncookiesSent and
	// TCPReqQFullDrop since the episode began.
	Syncookies        *int `json:"syncookies,omitempty"`
	CookiesSent       int  `json:"cookies_sent"`
	SynQueueFullDrops int  `json:"syn_queue_full_drops"`
}

func newListenerRecord(n *tracker.Narrative) *ListenerRecord {
	if n.Cause == "" {
		return nil
	}
	r := &ListenerRecord{Cause: string(n.Cause), SynackRetransmits: n.SynackRetransmits, SynackClients: n.SynackClients,
		SynackAcked: n.SynackAcked, SynQueue: n.SynQueueLen, SynQueueMax: n.SynQueueMax, CookiesSent: n.CookiesSent,
		SynQueueFullDrops: n.SynQueueFullDrops}
	if n.CookiesKnown && n.Syncookies >= 0 {
		v := n.Syncookies
		r.Syncookies = &v
	}
	return r
}
