package output

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tcpwatch/tcpwatch/output/communityid"
	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Narratives are the records tcpwatch writes most with --all: they are
// encoded by hand, in the field order of NarrativeRecord, instead of
// through encoding/json's reflection, which took more CPU than everything
// else tcpwatch does per connection. TestNarrativeJSONMatchesEncodingJSON
// keeps the two the same.

func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if i+8 <= len(s) && plain8(s[i:i+8]) {
			i += 8
			continue
		}
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// plain8 says whether none of s's 8 bytes needs escaping: each is
// printable ASCII, not '"' nor '\\'. Eight bytes at once: a summary or
// an explanation is a hundred or more of them, and appendJSONString looked
// at each alone (a third of a time_wait_syn_accepted notice's encoding).
func plain8(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	quote, backslash := w^(ones*'"'), w^(ones*'\\')
	// Each term has a high bit set when some byte is below 0x20, is '"'
	// (a zero byte of quote), is '\\', or is not ASCII.
	return ((w-ones*0x20)&^w|(quote-ones)&^quote|(backslash-ones)&^backslash|w)&highs == 0
}

func appendKey(b []byte, key string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

func appendStringField(b []byte, key, v string) []byte {
	return appendJSONString(appendKey(b, key), v)
}

func appendIntField(b []byte, key string, v int64) []byte {
	return strconv.AppendInt(appendKey(b, key), v, 10)
}

func appendUintField(b []byte, key string, v uint64) []byte {
	return strconv.AppendUint(appendKey(b, key), v, 10)
}

func appendBoolField(b []byte, key string, v bool) []byte {
	return strconv.AppendBool(appendKey(b, key), v)
}

func appendConnFields(b []byte, f *ConnFields) []byte {
	b = appendUintField(b, "cookie", f.Cookie)
	b = appendStringField(b, "family", f.Family)
	b = appendStringField(b, "laddr", f.LAddr)
	b = appendUintField(b, "lport", uint64(f.LPort))
	b = appendStringField(b, "raddr", f.RAddr)
	b = appendUintField(b, "rport", uint64(f.RPort))
	b = appendUintField(b, "netns", uint64(f.NetNS))
	b = appendUintField(b, "pid", uint64(f.PID))
	b = appendStringField(b, "comm", f.Comm)
	if f.Thread != "" {
		b = appendStringField(b, "thread", f.Thread)
	}
	b = appendStringField(b, "cgroup", f.Cgroup)
	b = appendStringField(b, "container_id", f.ContainerID)
	b = appendStringField(b, "pod_uid", f.PodUID)
	return appendStringField(b, "community_id", f.CommunityID)
}

func appendSettings(b []byte, s *SettingsRecord) []byte {
	b = append(b, `{"tcp_retries2":`...)
	b = strconv.AppendUint(b, uint64(s.TCPRetries2), 10)
	b = appendUintField(b, "tcp_syn_retries", uint64(s.TCPSynRetries))
	b = appendUintField(b, "tcp_orphan_retries", uint64(s.TCPOrphanRetries))
	b = appendIntField(b, "retrans_budget_ms", s.RetransBudgetMs)
	b = appendIntField(b, "rto_max_ms", s.RTOMaxMs)
	b = appendIntField(b, "user_timeout_ms", s.UserTimeoutMs)
	b = appendBoolField(b, "keepalive", s.Keepalive)
	b = appendIntField(b, "keepalive_time_s", s.KeepaliveTimeS)
	b = appendIntField(b, "keepalive_intvl_s", s.KeepaliveIntvlS)
	b = appendUintField(b, "keepalive_probes", uint64(s.KeepaliveProbes))
	b = appendIntField(b, "keepalive_budget_s", s.KeepaliveBudgetS)
	return append(b, '}')
}

// appendNoticeJSON encodes r with the fields, order and values
// encoding/json gives it: with --all a churning host tells up to one
// notice a connection, and reflection was half of a notice's cost. Not
// for a record with TimeWait or ResetReason (rare: encoding/json does those).
func appendNoticeJSON(b []byte, r *NoticeRecord) []byte {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, r.Type)
	b = appendStringField(b, "time", r.Time)
	b = appendStringField(b, "host", r.Host)
	b = appendStringField(b, "kind", r.Kind)
	b = appendConnFields(b, &r.ConnFields)
	b = appendStringField(b, "summary", r.Summary)
	if r.Explanation != "" {
		b = appendStringField(b, "explanation", r.Explanation)
	}
	if r.CauseUnseen {
		b = appendBoolField(b, "cause_unseen", true)
	}
	return append(b, '}')
}

// appendNarrativeJSON encodes r with the fields, order and values
// encoding/json gives it (it does not escape <, > and & for HTML).
func appendNarrativeJSON(b []byte, r *NarrativeRecord) []byte {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, r.Type)
	b = appendStringField(b, "time", r.Time)
	b = appendStringField(b, "host", r.Host)
	b = appendStringField(b, "verdict", r.Verdict)
	b = appendBoolField(b, "final", r.Final)
	b = appendStringField(b, "incident_id", r.IncidentID)
	b = appendConnFields(b, &r.ConnFields)
	b = appendStringField(b, "owner_source", r.OwnerSource)
	b = appendUintField(b, "inode", uint64(r.Inode))
	b = appendStringField(b, "state", r.State)
	b = appendBoolField(b, "orphan", r.Orphan)
	b = appendStringField(b, "errno", r.Errno)
	b = appendStringField(b, "reset_reason", r.ResetReason)
	b = appendIntField(b, "retransmits", int64(r.Retransmits))
	b = appendIntField(b, "failed_sends", int64(r.FailedSends))
	b = appendIntField(b, "probes", int64(r.Probes))
	b = appendIntField(b, "outage_ms", r.OutageMs)
	b = appendIntField(b, "giveup_in_ms", r.GiveUpInMs)
	b = append(appendKey(b, "rtos_ms"), '[')
	for i, v := range r.RTOsMs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	b = append(b, ']')
	b = appendIntField(b, "budget_ms", r.BudgetMs)
	b = appendStringField(b, "budget_setting", r.BudgetBy)
	b = appendIntField(b, "exit_signal", int64(r.ExitSignal))
	b = appendIntField(b, "exit_status", int64(r.ExitStatus))
	b = appendBoolField(b, "sent_reset", r.SentReset)
	b = appendBoolField(b, "lost_records", r.LostRecords)
	if r.EndUnseen {
		b = appendBoolField(b, "end_unseen", true)
	}
	b = appendStringField(b, "peer_verdict", r.PeerVerdict)
	b = appendUintField(b, "peer_netns", uint64(r.PeerNetNS))
	b = appendIntField(b, "peer_ended_ms_before", r.PeerEndedMsBefore)
	if r.CloseWaitSockets > 0 {
		b = appendIntField(b, "close_wait_sockets", int64(r.CloseWaitSockets))
		b = appendIntField(b, "close_wait_ms", r.CloseWaitMs)
		b = appendBoolField(b, "close_wait_exited", r.CloseWaitExited)
	}
	if p := r.Ports; p != nil {
		b = append(appendKey(b, "ports"), '{')
		b = append(b, `"failures":`...)
		b = strconv.AppendInt(b, int64(p.Failures), 10)
		b = appendIntField(b, "time_wait", int64(p.TimeWait))
		b = appendIntField(b, "other", int64(p.Other))
		b = appendIntField(b, "time_wait_all", int64(p.TimeWaitAll))
		b = appendIntField(b, "range_lo", int64(p.RangeLo))
		b = appendIntField(b, "range_hi", int64(p.RangeHi))
		b = appendIntField(b, "tcp_tw_reuse", int64(p.TwReuse))
		b = append(b, '}')
	}
	if len(r.Drops) > 0 {
		b = append(appendKey(b, "drops"), '[')
		for i, d := range r.Drops {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"direction":`...)
			b = appendJSONString(b, d.Direction)
			b = appendStringField(b, "reason", d.Reason)
			if d.Hook != "" {
				b = appendStringField(b, "hook", d.Hook)
			}
			if d.Elsewhere {
				b = appendBoolField(b, "elsewhere", true)
			}
			if d.Site != "" {
				b = appendStringField(b, "site", d.Site)
			}
			b = appendIntField(b, "count", int64(d.Count))
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if r.LeftHost != nil {
		b = appendIntField(b, "left_host", int64(*r.LeftHost))
	}
	if r.WindowProbes != 0 {
		b = appendIntField(b, "window_probes", int64(r.WindowProbes))
	}
	if r.PeerWindow != nil {
		b = appendUintField(b, "peer_window", uint64(*r.PeerWindow))
	}
	if r.NotSent != 0 {
		b = appendUintField(b, "notsent_bytes", uint64(r.NotSent))
	}
	if r.Endless {
		b = appendBoolField(b, "endless", r.Endless)
	}
	if r.QueueLen != 0 {
		b = appendUintField(b, "queue_len", uint64(r.QueueLen))
	}
	if r.QueueLimit != 0 {
		b = appendUintField(b, "queue_limit", uint64(r.QueueLimit))
	}
	if r.TurnedAway != 0 {
		b = appendIntField(b, "turned_away", int64(r.TurnedAway))
	}
	if l := r.Listener; l != nil {
		b = append(appendKey(b, "listener"), '{')
		b = append(b, `"cause":`...)
		b = appendJSONString(b, l.Cause)
		b = appendIntField(b, "synack_retransmits", int64(l.SynackRetransmits))
		b = appendIntField(b, "synack_clients", int64(l.SynackClients))
		b = appendIntField(b, "synack_acked", int64(l.SynackAcked))
		b = appendUintField(b, "syn_queue", uint64(l.SynQueue))
		b = appendUintField(b, "syn_queue_max", uint64(l.SynQueueMax))
		if l.Syncookies != nil {
			b = appendIntField(b, "syncookies", int64(*l.Syncookies))
		}
		b = appendIntField(b, "cookies_sent", int64(l.CookiesSent))
		b = appendIntField(b, "syn_queue_full_drops", int64(l.SynQueueFullDrops))
		b = append(b, '}')
	}
	b = appendStringField(b, "summary", r.Summary)
	b = appendStringField(b, "explanation", r.Explanation)
	b = append(appendKey(b, "timeline"), '[')
	for i, s := range r.Timeline {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"t_ms":`...)
		b = strconv.AppendInt(b, s.TMs, 10)
		b = appendStringField(b, "event", s.Event)
		b = append(b, '}')
	}
	b = append(b, ']')
	b = appendSettings(appendKey(b, "settings"), &r.Settings)
	return append(b, '}')
}

// Lifecycle reports whether n is a normal lifecycle, told in the short
// form by default: a connection that ended normally (local_closed, or
// peer_closed with no reset) with no error, no reset sent and no records
// lost, which only --all tells, for every connection of the machine. Its
// full record is ~1,300 bytes, most of it the same explanation, timeline
// and settings every time: at the rate a busy host closes connections that
// was most of tcpwatch's CPU and a gigabyte of output in ten seconds
// (issue #21). --explain gives it the full record again. A peer_closed
// with a reset (told without --all too) keeps the full record.
func Lifecycle(n *tracker.Narrative) bool {
	return n.Final && (n.Verdict == tracker.LocalClosed || n.Verdict == tracker.PeerClosed) &&
		n.Errno == 0 && n.ResetReason == "" && !n.SentReset && !n.LostRecords
}

// MaxLifecycleLine is the longest a normal lifecycle's short form may be,
// newline not counted (issue #21): at a busy host's rate of closes, bytes
// per line are most of --all's output and a good part of its CPU.
const MaxLifecycleLine = 400

// lifecycleGivesWay is how many fields the short form of a normal lifecycle
// leaves out, while it is longer than MaxLifecycleLine, in this order:
// owner_source (how the owner was found, not who it is), netns (the
// addresses and community_id name the flow, a container's id its
// namespace), the cgroup path (the one field of no bounded length: a
// Kubernetes pod's is near 200 bytes), then the container's ids (64 and 36
// bytes). --explain has them all.
type lifecycleGivesWay int

const (
	keepAll lifecycleGivesWay = iota
	leaveOwnerSource
	leaveNetns
	leaveCgroupPath
	leaveContainer
)

// appendLifecycleLine appends the short form of a normal lifecycle, at
// most MaxLifecycleLine bytes unless even without every field that gives
// way it is longer (a host name or process name far beyond the usual,
// escaped bytes).
func appendLifecycleLine(b []byte, n *tracker.Narrative, cg containers.Info, host string, seed uint16, ids *communityid.Cache) []byte {
	start := len(b)
	for leave := keepAll; ; leave++ {
		b = appendLifecycleJSON(b[:start], n, cg, host, seed, ids, leave)
		if len(b)-start <= MaxLifecycleLine || leave == leaveContainer {
			return b
		}
	}
}

// appendLifecycleJSON encodes the short form of a normal lifecycle (see
// appendLifecycleLine for what gives way to its bound): the fields of the full record
// that are not zero (errno, reset_reason, sent_reset and lost_records are,
// see Lifecycle), except family (the address says it), state (always
// CLOSE), inode (the socket is gone), orphan (whether the owner closed
// before the kernel finished is no news for a normal end), the outage
// budget (a normal end had no outage), and the words, timeline and
// settings: the verdict says what the summary would (this side, or the
// peer, closed the connection normally); with duration_ms (the last
// timeline step: from the first record of the connection to its end)
// instead. Names, order and values are the full record's, so a reader of
// one reads the other.
func appendLifecycleJSON(b []byte, n *tracker.Narrative, cg containers.Info, host string, seed uint16, ids *communityid.Cache, leave lifecycleGivesWay) []byte {
	b = append(b, `{"type":"narrative","time":"`...)
	b = n.Time.AppendFormat(b, TimeLayout)
	b = append(b, '"')
	b = appendStringField(b, "host", host)
	b = appendStringField(b, "verdict", string(n.Verdict))
	b = appendBoolField(b, "final", true)
	if n.Incident != "" {
		// A connection that recovered in an incident, then closed normally.
		b = appendStringField(b, "incident_id", n.Incident)
	}
	b = appendUintField(b, "cookie", n.Cookie)
	b = n.Local.Addr().AppendTo(append(appendKey(b, "laddr"), '"'))
	b = append(b, '"')
	b = appendUintField(b, "lport", uint64(n.Local.Port()))
	b = n.Remote.Addr().AppendTo(append(appendKey(b, "raddr"), '"'))
	b = append(b, '"')
	b = appendUintField(b, "rport", uint64(n.Remote.Port()))
	if leave < leaveNetns {
		b = appendUintField(b, "netns", uint64(n.NetNS))
	}
	b = appendCommunityID(b, ids, seed, n.Local, n.Remote)
	if n.Owner.PID != 0 {
		b = appendUintField(b, "pid", uint64(n.Owner.PID))
	}
	if n.Owner.Comm != "" {
		b = appendStringField(b, "comm", n.Owner.Comm)
	}
	if leave >= leaveCgroupPath {
		cg.Path = ""
	}
	if leave >= leaveContainer {
		cg.ID, cg.PodUID = "", ""
	}
	b = appendKnownCgroup(b, cg)
	if n.Owner.Source != wire.OwnerUnknown && leave < leaveOwnerSource {
		b = appendStringField(b, "owner_source", n.Owner.Source.String())
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
	if n.ExitSignal != 0 {
		b = appendIntField(b, "exit_signal", int64(n.ExitSignal))
	}
	if n.ExitStatus != 0 {
		b = appendIntField(b, "exit_status", int64(n.ExitStatus))
	}
	var duration time.Duration
	if len(n.Timeline) > 0 {
		duration = n.Timeline[len(n.Timeline)-1].At
	}
	b = appendIntField(b, "duration_ms", duration.Milliseconds())
	return append(b, '}')
}

// appendCommunityID appends the community_id field of a TCP flow, from
// ids when given (its escaping is none: "1:" and base64).
func appendCommunityID(b []byte, ids *communityid.Cache, seed uint16, local, remote netip.AddrPort) []byte {
	if ids == nil {
		return appendStringField(b, "community_id", communityid.Flow(seed, communityid.TCP, local, remote))
	}
	b = append(appendKey(b, "community_id"), '"')
	return append(ids.AppendFlow(b, seed, communityid.TCP, local, remote), '"')
}

// appendNoticeLine encodes a notice as appendNoticeJSON encodes its
// NoticeRecord, without building the record: no string made for its
// time, addresses and Community ID (with --all a churning host tells up
// to one notice a connection). Not for a notice with TimeWait facts or a
// ResetReason (see Writer.Notice).
func appendNoticeLine(b []byte, n *tracker.Notice, cg containers.Info, host string, seed uint16, ids *communityid.Cache, explain bool) []byte {
	b = append(b, `{"type":"event","time":"`...)
	b = n.Time.AppendFormat(b, TimeLayout)
	b = append(b, '"')
	b = appendStringField(b, "host", host)
	b = appendStringField(b, "kind", n.Kind)
	b = appendUintField(b, "cookie", n.Cookie)
	family := "ipv4"
	if n.Local.Addr().Is6() {
		family = "ipv6"
	}
	b = appendStringField(b, "family", family)
	b = appendAddrField(b, "laddr", n.Local.Addr())
	b = appendUintField(b, "lport", uint64(n.Local.Port()))
	b = appendAddrField(b, "raddr", n.Remote.Addr())
	b = appendUintField(b, "rport", uint64(n.Remote.Port()))
	b = appendUintField(b, "netns", uint64(n.NetNS))
	b = appendUintField(b, "pid", uint64(n.Owner.PID))
	b = appendStringField(b, "comm", n.Owner.Comm)
	if n.Owner.Thread != "" {
		b = appendStringField(b, "thread", n.Owner.Thread)
	}
	b = appendStringField(b, "cgroup", cg.Path)
	b = appendStringField(b, "container_id", cg.ID)
	b = appendStringField(b, "pod_uid", cg.PodUID)
	b = appendCommunityID(b, ids, seed, n.Local, n.Remote)
	b = appendStringField(b, "summary", words.NoticeSummary(n))
	if explain || !RoutineNotice(n) {
		if e := words.NoticeExplanation(n); e != "" {
			b = appendStringField(b, "explanation", e)
		}
	}
	if n.CauseUnseen {
		b = appendBoolField(b, "cause_unseen", true)
	}
	return append(b, '}')
}

// appendAddrField appends an address as connFields writes it
// (netip.Addr.String: "invalid IP" for none).
func appendAddrField(b []byte, key string, a netip.Addr) []byte {
	if !a.IsValid() {
		return appendStringField(b, key, a.String())
	}
	return append(a.AppendTo(append(appendKey(b, key), '"')), '"')
}

// appendKnownCgroup appends the cgroup fields that are known, for the
// short records that leave out what is empty.
func appendKnownCgroup(b []byte, cg containers.Info) []byte {
	if cg.Path != "" {
		b = appendStringField(b, "cgroup", cg.Path)
	}
	if cg.ID != "" {
		b = appendStringField(b, "container_id", cg.ID)
	}
	if cg.PodUID != "" {
		b = appendStringField(b, "pod_uid", cg.PodUID)
	}
	return b
}
