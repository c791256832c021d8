package output

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/output/communityid"
	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// IncidentRecord is the JSON form of an incident (`type: "incident"`),
// documented in docs/incidents.md.
type IncidentRecord struct {
	Type        string            `json:"type"`
	Time        string            `json:"time"`
	Host        string            `json:"host"`
	IncidentID  string            `json:"incident_id"`
	Phase       string            `json:"phase"`
	Peer        PeerRecord        `json:"peer"`
	Onset       string            `json:"onset"`
	Ended       string            `json:"ended"`
	OutageMs    int64             `json:"outage_ms"`
	Connections int               `json:"connections"`
	InTrouble   int               `json:"in_trouble"`
	Recovered   int               `json:"recovered"`
	Failed      int               `json:"failed"`
	Owners      []OwnerRecord     `json:"owners"`
	Verdicts    map[string]int    `json:"verdicts"`
	Errnos      map[string]int    `json:"errnos"`
	Retransmits int               `json:"retransmits"`
	FailedSends int               `json:"failed_sends"`
	Probes      int               `json:"probes"`
	RTOMinMs    int64             `json:"rto_min_ms"`
	RTOMaxMs    int64             `json:"rto_max_ms"`
	GiveUpFirst string            `json:"giveup_first"`
	GiveUpLast  string            `json:"giveup_last"`
	FirstFailed string            `json:"first_failure"`
	LastFailed  string            `json:"last_failure"`
	Changes     []string          `json:"changes"`
	Outcome     string            `json:"outcome"`
	Joined      []JoinedRecord    `json:"joined"`
	SharedFate  *SharedFateRecord `json:"shared_fate"`
	Summary     string            `json:"summary"`
	// Explanations gives, once per incident, the explanation of each
	// verdict its connections reached (from one of them).
	Explanations map[string]string `json:"explanations"`
}

// PeerRecord is an incident's peer.
type PeerRecord struct {
	Addr  string `json:"addr"`
	Port  uint16 `json:"port"` // 0 when the connections do not share one
	NetNS uint32 `json:"netns"`
}

// OwnerRecord is a process with connections in an incident.
type OwnerRecord struct {
	PID         uint32 `json:"pid"`
	Comm        string `json:"comm"`
	ContainerID string `json:"container_id"`
	Connections int    `json:"connections"`
}

// JoinedRecord groups the connections that joined an incident since its
// last record by local address, peer port, owner and verdict: each joined
// connection stands for its first narrative, which is not written apart.
// Conns holds one [cookie, lport, onset_ms, giveup_ms] per connection:
// its first sign of trouble and its projected give-up in ms after the
// incident's onset (giveup_ms 0: none projected).
type JoinedRecord struct {
	LAddr   string     `json:"laddr"`
	RPort   uint16     `json:"rport"`
	PID     uint32     `json:"pid"`
	Verdict string     `json:"verdict"`
	Conns   [][4]int64 `json:"conns"`
}

// SharedFateRecord is what the peer's trouble means for its idle connections.
type SharedFateRecord struct {
	Idle            int           `json:"idle"`
	Owners          []OwnerRecord `json:"owners"`
	Keepalive       int           `json:"keepalive"`
	NoticeFirst     string        `json:"notice_first"`
	NoticeLast      string        `json:"notice_last"`
	KeepaliveProbes uint8         `json:"keepalive_probes"`
	KeepaliveIntvlS int64         `json:"keepalive_intvl_s"`
	Never           int           `json:"never"`
	Source          string        `json:"source"`
}

func timeOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(TimeLayout)
}

func ownerRecords(owners []incident.Owner) []OwnerRecord {
	out := make([]OwnerRecord, len(owners))
	for i, o := range owners {
		out[i] = OwnerRecord{PID: o.PID, Comm: o.Comm, ContainerID: o.Container, Connections: o.Connections}
	}
	return out
}

func joinedRecords(inc *incident.Incident) []JoinedRecord {
	type groupKey struct {
		laddr   netip.Addr
		rport   uint16
		pid     uint32
		verdict tracker.Verdict
	}
	out := []JoinedRecord{}
	index := map[groupKey]int{}
	for _, j := range inc.Joined {
		k := groupKey{j.Local.Addr(), j.Remote.Port(), j.PID, j.Verdict}
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, JoinedRecord{LAddr: k.laddr.String(), RPort: k.rport, PID: k.pid, Verdict: string(k.verdict)})
		}
		var giveUp int64
		if !j.GiveUp.IsZero() {
			giveUp = j.GiveUp.Sub(inc.Onset).Milliseconds()
		}
		out[i].Conns = append(out[i].Conns, [4]int64{int64(j.Cookie), int64(j.Local.Port()), j.Onset.Sub(inc.Onset).Milliseconds(), giveUp})
	}
	return out
}

// NewIncidentRecord builds the JSON form of inc.
func NewIncidentRecord(inc *incident.Incident) IncidentRecord {
	r := IncidentRecord{
		Type: "incident", Time: timeOrEmpty(inc.Time), IncidentID: inc.ID, Phase: string(inc.Phase),
		Peer:  PeerRecord{Addr: inc.Peer.String(), Port: inc.Port, NetNS: inc.NetNS},
		Onset: timeOrEmpty(inc.Onset), Ended: timeOrEmpty(inc.Ended), OutageMs: inc.Outage.Milliseconds(),
		Connections: inc.Connections, InTrouble: inc.InTrouble, Recovered: inc.Recovered, Failed: inc.Failed,
		Owners: ownerRecords(inc.Owners), Verdicts: map[string]int{}, Errnos: map[string]int{},
		Retransmits: inc.Retransmits, FailedSends: inc.FailedSends, Probes: inc.Probes,
		RTOMinMs: inc.RTOMin.Milliseconds(), RTOMaxMs: inc.RTOMax.Milliseconds(),
		GiveUpFirst: timeOrEmpty(inc.GiveUpFirst), GiveUpLast: timeOrEmpty(inc.GiveUpLast),
		FirstFailed: timeOrEmpty(inc.FirstFailure), LastFailed: timeOrEmpty(inc.LastFailure),
		Changes: inc.Changes.Names(), Outcome: string(inc.Outcome), Joined: joinedRecords(inc),
		Summary: words.IncidentSummary(inc), Explanations: map[string]string{},
	}
	if r.Changes == nil {
		r.Changes = []string{}
	}
	for v, n := range inc.Verdicts {
		r.Verdicts[string(v)] = n
	}
	for e, n := range inc.Errnos {
		r.Errnos[tcp.ErrnoName(e)] = n
	}
	if sf := inc.SharedFate; sf != nil {
		r.SharedFate = &SharedFateRecord{Idle: sf.Idle, Owners: ownerRecords(sf.Owners), Keepalive: sf.Keepalive,
			NoticeFirst: timeOrEmpty(sf.NoticeFirst), NoticeLast: timeOrEmpty(sf.NoticeLast),
			KeepaliveProbes: sf.KeepaliveProbes, KeepaliveIntvlS: int64(sf.KeepaliveIntvl / time.Second),
			Never: sf.Never, Source: sf.Source}
	}
	for _, ex := range inc.Examples {
		r.Explanations[string(ex.Verdict)] = words.Explanation(ex)
	}
	return r
}

// Incident writes one incident record: in text, one line with the phase
// (or the outcome) first, then the peer and the evidence, the summary last.
func (w *Writer) Incident(inc *incident.Incident) error {
	if w.format == JSON {
		rec := NewIncidentRecord(inc)
		rec.Host = w.host
		if w.schema == SchemaV2 {
			w.line = appendV2(w.line[:0], rec.Type, rec.Time, IncidentSeverity(inc), rec.Summary, Attrs(&rec))
			return w.writeLine()
		}
		return w.writeJSON(rec)
	}
	w.line = w.AppendIncidentText(w.line[:0], inc)
	return w.writeLine()
}

// AppendIncidentText appends the text form of an incident record.
func (w *Writer) AppendIncidentText(b []byte, inc *incident.Incident) []byte {
	b = inc.Time.AppendFormat(b, "15:04:05.000 ")
	head := "incident " + string(inc.Phase)
	color := ansiYellow
	if inc.Phase == incident.Close {
		head = "incident " + string(inc.Outcome)
		switch inc.Outcome {
		case incident.Recovered:
			color = ansiGreen
		case incident.Fatal, incident.Mixed:
			color = ansiRed
		}
	}
	if w.color {
		b = fmt.Appendf(b, "%s%-20s%s", color, head, ansiReset)
	} else {
		b = fmt.Appendf(b, "%-20s", head)
	}
	b = fmt.Appendf(b, " peer %s id=%s conns=%d", words.Peer(inc), inc.ID, inc.Connections)
	b = append(b, incidentEvidence(inc)...)
	b = append(b, " | "...)
	b = append(b, Sanitize(words.IncidentSummary(inc))...)
	if w.explain {
		for _, ex := range inc.Examples {
			b = append(b, "\n    why ("...)
			b = append(b, ex.Verdict...)
			b = append(b, "): "...)
			b = append(b, Sanitize(words.Explanation(ex))...)
		}
	}
	return b
}

func incidentEvidence(inc *incident.Incident) string {
	var parts []string
	var owners []string
	for i, o := range inc.Owners {
		if i == 5 {
			owners = append(owners, fmt.Sprintf("+%d", len(inc.Owners)-5))
			break
		}
		owners = append(owners, fmt.Sprintf("%s/%d×%d", Sanitize(o.Comm), o.PID, o.Connections))
	}
	parts = append(parts, "owners="+strings.Join(owners, ","))
	for _, v := range tracker.Verdicts {
		if n := inc.Verdicts[v]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", v, n))
		}
	}
	if inc.Retransmits > 0 {
		parts = append(parts, "retrans="+strconv.Itoa(inc.Retransmits))
	}
	if inc.FailedSends > 0 {
		parts = append(parts, "failed_sends="+strconv.Itoa(inc.FailedSends))
	}
	if inc.Probes > 0 {
		parts = append(parts, "probes="+strconv.Itoa(inc.Probes))
	}
	if inc.RTOMax > 0 {
		rto := words.Secs(inc.RTOMin)
		if inc.RTOMax != inc.RTOMin {
			rto += ".." + words.Secs(inc.RTOMax)
		}
		parts = append(parts, "rto="+rto)
	}
	parts = append(parts, "onset="+inc.Onset.Format("15:04:05.000"), "outage="+words.Secs(inc.Outage))
	if !inc.GiveUpFirst.IsZero() {
		parts = append(parts, "giveup="+inc.GiveUpFirst.Format("15:04:05.000")+".."+inc.GiveUpLast.Format("15:04:05.000"))
	}
	if len(inc.Errnos) > 0 {
		parts = append(parts, "errno="+strings.ReplaceAll(words.ErrnoMix(inc.Errnos), " ", ""))
	}
	if sf := inc.SharedFate; sf != nil && sf.Idle > 0 {
		parts = append(parts, fmt.Sprintf("idle=%d(keepalive=%d,never=%d)", sf.Idle, sf.Keepalive, sf.Never))
	}
	if names := inc.Changes.Names(); len(names) > 0 {
		parts = append(parts, "changed="+strings.Join(names, ","))
	}
	return " " + strings.Join(parts, " ")
}

// appendFoldedNarrativeJSON encodes a narrative of a connection in an
// incident: the incident's records carry the peer, the owners' names, the
// summary and the explanation, so it carries only what is its own, and
// leaves out what is zero (docs/incidents.md).
func appendFoldedNarrativeJSON(b []byte, host string, n *tracker.Narrative, cg containers.Info, seed uint16) []byte {
	b = append(b, `{"type":"narrative"`...)
	b = n.Time.AppendFormat(append(b, `,"time":"`...), TimeLayout)
	b = append(b, '"')
	b = appendStringField(b, "host", host)
	b = appendStringField(b, "verdict", string(n.Verdict))
	b = appendBoolField(b, "final", n.Final)
	b = appendStringField(b, "incident_id", n.Incident)
	b = appendBoolField(b, "folded", true)
	b = appendUintField(b, "cookie", n.Cookie)
	b = appendStringField(b, "laddr", n.Local.Addr().String())
	b = appendUintField(b, "lport", uint64(n.Local.Port()))
	b = appendStringField(b, "raddr", n.Remote.Addr().String())
	b = appendUintField(b, "rport", uint64(n.Remote.Port()))
	b = appendUintField(b, "netns", uint64(n.NetNS))
	b = appendStringField(b, "community_id", communityid.Flow(seed, communityid.TCP, n.Local, n.Remote))
	b = appendUintField(b, "pid", uint64(n.Owner.PID))
	b = appendKnownCgroup(b, cg)
	b = appendStringField(b, "state", n.State.String())
	if n.Errno != 0 {
		b = appendStringField(b, "errno", tcp.ErrnoName(n.Errno))
	}
	if n.Retransmits != 0 {
		b = appendIntField(b, "retransmits", int64(n.Retransmits))
	}
	if n.FailedSends != 0 {
		b = appendIntField(b, "failed_sends", int64(n.FailedSends))
	}
	if n.Probes != 0 {
		b = appendIntField(b, "probes", int64(n.Probes))
	}
	if len(n.RTOs) > 0 {
		b = appendIntField(b, "rto_ms", n.RTOs[len(n.RTOs)-1].Milliseconds())
	}
	if n.Outage != 0 {
		b = appendIntField(b, "outage_ms", n.Outage.Milliseconds())
	}
	if n.GiveUpIn != 0 {
		b = appendIntField(b, "giveup_in_ms", n.GiveUpIn.Milliseconds())
	}
	if n.ResetReason != "" {
		b = appendStringField(b, "reset_reason", n.ResetReason)
	}
	if n.LostRecords {
		b = appendBoolField(b, "lost_records", true)
	}
	return append(b, '}')
}
