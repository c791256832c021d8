package output

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/tcpwatch/tcpwatch/output/communityid"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// EventRecord is the JSON form of one kernel event (`type: "event"`,
// with --events). Its fields are documented in docs/events.md.
type EventRecord struct {
	Type string `json:"type"`
	Time string `json:"time"`
	Host string `json:"host"`
	Kind string `json:"kind"`
	ConnFields
	State         string `json:"state,omitempty"`
	OldState      string `json:"old_state,omitempty"`
	CAState       string `json:"ca_state,omitempty"`
	OldCAState    string `json:"old_ca_state,omitempty"`
	Retransmits   uint8  `json:"retransmits"`
	Backoff       uint8  `json:"backoff"`
	Probes        uint8  `json:"probes"`
	RTOMs         int64  `json:"rto_ms"`
	SRTTUs        int64  `json:"srtt_us"`
	PacketsOut    uint32 `json:"packets_out"`
	RetransOut    uint32 `json:"retrans_out"`
	BytesInFlight uint32 `json:"bytes_in_flight"`
	TotalRetrans  uint32 `json:"total_retrans"`
	AckAgeMs      int64  `json:"ack_age_ms"`
	SkErr         string `json:"sk_err,omitempty"`
	SkErrSoft     string `json:"sk_err_soft,omitempty"`
	Errno         string `json:"errno,omitempty"`
	ResetReason   string `json:"reset_reason,omitempty"`
	ReplyReset    bool   `json:"reply_reset,omitempty"`
	Keepalive     string `json:"keepalive,omitempty"`
	OwnerExiting  bool   `json:"owner_exiting,omitempty"`
	ExitSignal    int    `json:"exit_signal,omitempty"`
	ExitCode      int    `json:"exit_code,omitempty"`
	// drop: the kernel's skb_drop_reason number (its name is in the
	// narrative), the direction, the inferred netfilter hook, how many.
	DropReason    int32  `json:"drop_reason,omitempty"`
	DropDirection string `json:"drop_direction,omitempty"`
	DropHook      string `json:"drop_hook,omitempty"`
	Drops         uint32 `json:"drops,omitempty"`
	// window_probe: the peer's window and the bytes waiting.
	PeerWindow *uint32 `json:"peer_window,omitempty"`
	NotSent    uint32  `json:"notsent_bytes,omitempty"`
	// time_wait: a SYN or RST met a 4-tuple in TIME_WAIT (docs/json.md).
	TimeWaitSeen string          `json:"time_wait_seen,omitempty"`
	TimeWait     *TimeWaitRecord `json:"time_wait,omitempty"`
	Settings     SettingsRecord  `json:"settings"`
}

// SettingsRecord is the `settings` object: what decides when the kernel
// gives up on this connection.
type SettingsRecord struct {
	TCPRetries2      uint8 `json:"tcp_retries2"`
	TCPSynRetries    uint8 `json:"tcp_syn_retries"`
	TCPOrphanRetries uint8 `json:"tcp_orphan_retries"`
	RetransBudgetMs  int64 `json:"retrans_budget_ms"`
	RTOMaxMs         int64 `json:"rto_max_ms"`
	UserTimeoutMs    int64 `json:"user_timeout_ms"`
	Keepalive        bool  `json:"keepalive"`
	KeepaliveTimeS   int64 `json:"keepalive_time_s"`
	KeepaliveIntvlS  int64 `json:"keepalive_intvl_s"`
	KeepaliveProbes  uint8 `json:"keepalive_probes"`
	KeepaliveBudgetS int64 `json:"keepalive_budget_s"`
}

// NewSettingsRecord summarises a connection's settings, with the budgets they imply.
func NewSettingsRecord(s tcp.Settings, rtoMax time.Duration) SettingsRecord {
	return SettingsRecord{
		TCPRetries2:      s.Retries2,
		TCPSynRetries:    s.SynRetries,
		TCPOrphanRetries: s.OrphanRetries,
		RetransBudgetMs:  tcp.RetransmitBudget(s.Retries2, rtoMax).Milliseconds(),
		RTOMaxMs:         rtoMax.Milliseconds(),
		UserTimeoutMs:    s.UserTimeout.Milliseconds(),
		Keepalive:        s.KeepaliveOn,
		KeepaliveTimeS:   int64(s.KeepaliveTime / time.Second),
		KeepaliveIntvlS:  int64(s.KeepaliveIntvl / time.Second),
		KeepaliveProbes:  s.KeepaliveProbes,
		KeepaliveBudgetS: int64(tcp.KeepaliveBudget(s) / time.Second),
	}
}

// ConnFields identify a connection in every JSON record that is about one.
type ConnFields struct {
	Cookie uint64 `json:"cookie"`
	Family string `json:"family"`
	LAddr  string `json:"laddr"`
	LPort  uint16 `json:"lport"`
	RAddr  string `json:"raddr"`
	RPort  uint16 `json:"rport"`
	NetNS  uint32 `json:"netns"`
	PID    uint32 `json:"pid"`
	Comm   string `json:"comm"`
	// Thread is extra detail: the owner's thread that acted (connect,
	// listen, close) when its name is not the process's; absent otherwise.
	Thread string `json:"thread,omitempty"`
	// The socket's cgroup v2 path, and the container and pod it names
	// ("" when unknown or none).
	Cgroup      string `json:"cgroup"`
	ContainerID string `json:"container_id"`
	PodUID      string `json:"pod_uid"`
	// The connection's Community ID (TCP, --community-id-seed): the same
	// on both ends and in Zeek's, Suricata's or Elastic's flow records.
	CommunityID string `json:"community_id"`
}

// setCgroup fills the cgroup fields from what the cgroup names.
func (f *ConnFields) setCgroup(info containers.Info) {
	f.Cgroup, f.ContainerID, f.PodUID = info.Path, info.ID, info.PodUID
}

// appendContainer appends the text form of a known container after the owner.
func appendContainer(b []byte, info containers.Info) []byte {
	if s := info.Short(); s != "" {
		b = append(b, ' ')
		b = append(b, s...)
	}
	return b
}

func connFields(seed uint16, cookie uint64, local, remote netip.AddrPort, netns, pid uint32, comm, thread string) ConnFields {
	f := ConnFields{Cookie: cookie, Family: "ipv4", LAddr: local.Addr().String(), LPort: local.Port(),
		RAddr: remote.Addr().String(), RPort: remote.Port(), NetNS: netns, PID: pid, Comm: comm, Thread: thread,
		CommunityID: communityid.Flow(seed, communityid.TCP, local, remote)}
	if local.Addr().Is6() {
		f.Family = "ipv6"
	}
	return f
}

// dropDirection: "in" for a packet from the peer, "out" for one this side
// sent, with "_elsewhere" when another namespace of this kernel dropped it.
func dropDirection(f wire.Flags) string {
	d := "out"
	if f&wire.FlagDropIn != 0 {
		d = "in"
	}
	if f&wire.FlagDropElsewhere != 0 {
		d += "_elsewhere"
	}
	return d
}

// keepaliveAction names what the keepalive timer did.
func keepaliveAction(f wire.Flags) string {
	switch {
	case f&wire.FlagKeepaliveKill != 0:
		return "killed"
	case f&wire.FlagProbeSent != 0:
		return "probe_sent"
	case f&wire.FlagProbeAnswered != 0:
		return "probe_answered"
	}
	return ""
}

// NewEventRecord builds the JSON form of ev, whose reset reasons the
// kernel names in reasons and whose connection's cgroup names cg
// (Community ID seed 0).
func NewEventRecord(ev *wire.Event, reasons tcp.ResetReasons, cg containers.Info) EventRecord {
	return NewEventRecordSeeded(ev, reasons, cg, 0)
}

// NewEventRecordSeeded is NewEventRecord with a Community ID seed.
func NewEventRecordSeeded(ev *wire.Event, reasons tcp.ResetReasons, cg containers.Info, seed uint16) EventRecord {
	r := EventRecord{
		Type:          "event",
		Time:          ev.Time.Format(TimeLayout),
		Kind:          ev.Kind.String(),
		ConnFields:    connFields(seed, ev.Cookie, ev.Local, ev.Remote, ev.NetNS, ev.PID, ev.Comm(), ev.Thread()),
		Retransmits:   ev.Retransmits,
		Backoff:       ev.Backoff,
		Probes:        ev.ProbesOut,
		RTOMs:         ev.RTO.Milliseconds(),
		SRTTUs:        ev.SRTT.Microseconds(),
		PacketsOut:    ev.PacketsOut,
		RetransOut:    ev.RetransOut,
		BytesInFlight: ev.BytesInFlight,
		TotalRetrans:  ev.TotalRetrans,
		AckAgeMs:      ev.AckAge.Milliseconds(),
		SkErr:         tcp.ErrnoName(ev.SkErr),
		SkErrSoft:     tcp.ErrnoName(ev.SkErrSoft),
		ReplyReset:    ev.Flags&wire.FlagReplyReset != 0,
		Keepalive:     keepaliveAction(ev.Flags),
		OwnerExiting:  ev.Flags&wire.FlagOwnerExiting != 0,
		Settings:      NewSettingsRecord(ev.Settings, ev.RTOMax),
	}
	r.setCgroup(cg)
	if ev.Flags&wire.FlagNoSocket == 0 {
		r.State = ev.State.String()
		r.CAState = ev.CAState.String()
	}
	switch ev.Kind {
	case wire.KindState:
		r.OldState = ev.OldState.String()
	case wire.KindCongState:
		r.OldCAState = ev.OldCA.String()
	case wire.KindSendReset:
		r.ResetReason = reasons.Name(ev.Detail)
	case wire.KindError:
		r.Errno = tcp.ErrnoName(ev.Detail)
	case wire.KindRetransmit:
		r.Errno = tcp.ErrnoName(ev.Detail)
	case wire.KindDrop:
		r.DropReason, r.DropDirection, r.DropHook, r.Drops = ev.Detail, dropDirection(ev.Flags), ev.NFHook.String(), ev.Drops
		r.State, r.CAState = "", ""
	case wire.KindProbe0:
		wnd := ev.SndWnd
		r.PeerWindow, r.NotSent = &wnd, ev.NotSent
	case wire.KindTimeWait:
		r.TimeWaitSeen, r.TimeWait, r.CAState = ev.TimeWait.Seen.String(), timeWaitRecord(&ev.TimeWait, 0), ""
	}
	if r.OwnerExiting {
		r.ExitSignal, r.ExitCode = ev.ExitSignal(), ev.ExitStatus()
	}
	return r
}

// Event writes one raw kernel event, whose connection's cgroup names info.
func (w *Writer) Event(ev *wire.Event, reasons tcp.ResetReasons, info containers.Info) error {
	if w.format == JSON {
		rec := NewEventRecordSeeded(ev, reasons, info, w.seed)
		rec.Host = w.host
		if w.schema == SchemaV2 {
			w.line = appendV2(w.line[:0], rec.Type, rec.Time, SeverityDebug, EventText(ev, reasons), Attrs(&rec))
			return w.writeLine()
		}
		return w.writeJSON(rec)
	}
	w.line = appendEventText(w.line[:0], ev, reasons)
	if s := info.Short(); s != "" {
		w.line = append(w.line, " container="...)
		w.line = append(w.line, s...)
	}
	return w.writeLine()
}

func appendEventText(b []byte, ev *wire.Event, reasons tcp.ResetReasons) []byte {
	b = ev.Time.AppendFormat(b, "15:04:05.000000")
	b = append(b, ' ')
	b = fmt.Appendf(b, "%-13s ", ev.Kind)
	b = append(b, ev.Local.String()...)
	b = append(b, " > "...)
	b = append(b, ev.Remote.String()...)
	if ev.Kind == wire.KindDrop {
		// A packet, not a socket: no socket figures.
		b = fmt.Appendf(b, " %s drops=%d skb_drop_reason=%d", dropDirection(ev.Flags), ev.Drops, ev.Detail)
		if h := ev.NFHook.String(); h != "" {
			b = append(b, " hook="...)
			b = append(b, h...)
		}
		b = append(b, " netns="...)
		b = strconv.AppendUint(b, uint64(ev.NetNS), 10)
		if ev.Cookie != 0 {
			b = fmt.Appendf(b, " sk=%x", ev.Cookie)
		}
		return b
	}
	if ev.Kind == wire.KindTimeWait {
		// A segment against what the timewait socket remembers: no socket figures.
		f := &ev.TimeWait
		_, ahead := f.SeqNewer()
		b = fmt.Appendf(b, " TIME_WAIT %s seq=%d rcv_nxt=%d seq_ahead=%d", f.Seen, f.Seq, f.RcvNxt, ahead)
		if f.HasTSval {
			b = fmt.Appendf(b, " tsval=%d", f.TSval)
		}
		if f.PAWS {
			b = fmt.Appendf(b, " ts_recent=%d", f.TSRecent)
		}
		b = fmt.Appendf(b, " tcp_rfc1337=%t left=%s netns=%d", f.RFC1337, f.Left, ev.NetNS)
		if ev.Cookie != 0 {
			b = fmt.Appendf(b, " sk=%x", ev.Cookie)
		}
		return b
	}
	if ev.Flags&wire.FlagNoSocket != 0 {
		b = append(b, " (no socket)"...)
	} else if ev.Kind == wire.KindState {
		b = fmt.Appendf(b, " %s->%s", ev.OldState, ev.State)
	} else {
		b = append(b, ' ')
		b = append(b, ev.State.String()...)
	}
	switch ev.Kind {
	case wire.KindCongState:
		b = fmt.Appendf(b, " ca=%s->%s", ev.OldCA, ev.CAState)
	case wire.KindSendReset:
		if n := reasons.Name(ev.Detail); n != "" {
			b = append(b, " reason="...)
			b = append(b, n...)
		}
		if ev.Flags&wire.FlagReplyReset != 0 {
			b = append(b, " reply"...)
		}
	case wire.KindError:
		b = append(b, " errno="...)
		b = append(b, tcp.ErrnoName(ev.Detail)...)
	case wire.KindKeepalive:
		b = append(b, " keepalive="...)
		b = append(b, keepaliveAction(ev.Flags)...)
	case wire.KindRetransmit:
		if ev.Detail != 0 {
			b = append(b, " failed="...)
			b = append(b, tcp.ErrnoName(ev.Detail)...)
		}
	case wire.KindProbe0:
		b = fmt.Appendf(b, " window_probe=%d->%d wnd=%d notsent=%d", ev.ProbesBefore, ev.ProbesOut, ev.SndWnd, ev.NotSent)
	}
	if ev.Flags&wire.FlagNoSocket == 0 {
		if ev.Kind != wire.KindCongState {
			b = fmt.Appendf(b, " ca=%s", ev.CAState)
		}
		b = fmt.Appendf(b, " retrans=%d backoff=%d rto=%s ack_age=%s inflight=%d",
			ev.Retransmits, ev.Backoff, ev.RTO, ev.AckAge, ev.PacketsOut)
		if ev.ProbesOut > 0 || ev.Kind == wire.KindKeepalive {
			b = fmt.Appendf(b, " probes=%d/%d", ev.ProbesOut, ev.Settings.KeepaliveProbes)
		}
		if ev.SkErr != 0 {
			b = append(b, " sk_err="...)
			b = append(b, tcp.ErrnoName(ev.SkErr)...)
		}
		if ev.SkErrSoft != 0 {
			b = append(b, " sk_err_soft="...)
			b = append(b, tcp.ErrnoName(ev.SkErrSoft)...)
		}
	}
	b = appendOwner(b, ev.PID, ev.Comm(), ev.Thread())
	if ev.Flags&wire.FlagOwnerExiting != 0 {
		if sig := ev.ExitSignal(); sig != 0 {
			b = fmt.Appendf(b, " exiting(signal %d)", sig)
		} else {
			b = fmt.Appendf(b, " exiting(status %d)", ev.ExitStatus())
		}
	}
	b = append(b, " netns="...)
	b = strconv.AppendUint(b, uint64(ev.NetNS), 10)
	if ev.Cookie != 0 {
		b = fmt.Appendf(b, " sk=%x", ev.Cookie)
	}
	return b
}
