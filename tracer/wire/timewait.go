package wire

import (
	"fmt"
	"time"

	"github.com/tcpwatch/tcpwatch/bpf"
)

// TimeWaitSeen is what a segment did to a 4-tuple in TIME_WAIT
// (KindTimeWait): enum tw_timewait_seen of bpf/record.h.
type TimeWaitSeen uint8

const (
	TimeWaitSynAnswered   = TimeWaitSeen(bpf.TcpwatchTwTimewaitSeenTW_TWS_SYN_ANSWERED)   // a SYN not accepted, answered with the old ACK
	TimeWaitSynUnanswered = TimeWaitSeen(bpf.TcpwatchTwTimewaitSeenTW_TWS_SYN_UNANSWERED) // the same, the ACK rate-limited
	TimeWaitRstEnded      = TimeWaitSeen(bpf.TcpwatchTwTimewaitSeenTW_TWS_RST_ENDED)      // an RST ended the TIME_WAIT
	TimeWaitRstKept       = TimeWaitSeen(bpf.TcpwatchTwTimewaitSeenTW_TWS_RST_KEPT)       // an RST the TIME_WAIT ignored
)

var timeWaitSeenNames = [...]string{TimeWaitSynAnswered: "syn_answered", TimeWaitSynUnanswered: "syn_unanswered",
	TimeWaitRstEnded: "rst_ended", TimeWaitRstKept: "rst_ignored"}

// String is the name --events shows: syn_answered, syn_unanswered,
// rst_ended, rst_ignored.
func (s TimeWaitSeen) String() string {
	if int(s) < len(timeWaitSeenNames) && timeWaitSeenNames[s] != "" {
		return timeWaitSeenNames[s]
	}
	return fmt.Sprintf("time_wait_seen(%d)", uint8(s))
}

// TimeWaitFacts are the kernel's figures behind a KindTimeWait record:
// the segment against what the timewait socket remembers of the old
// connection.
type TimeWaitFacts struct {
	Seen    TimeWaitSeen
	RFC1337 bool   // the namespace's tcp_rfc1337
	Seq     uint32 // the segment's sequence number
	RcvNxt  uint32 // tw_rcv_nxt: the next sequence number the old connection expected from the peer
	// TSval is the segment's timestamp (HasTSval); TSRecent the peer's
	// last one the TIME_WAIT kept (PAWS: only when it keeps them).
	TSval    uint32
	HasTSval bool
	TSRecent uint32
	PAWS     bool
	// Left is how long the TIME_WAIT still had to run when the segment
	// came (for an RST that ended it: how much sooner it ended).
	Left time.Duration
}

const (
	twsWhat    = uint32(bpf.TcpwatchTwTimewaitSeenTW_TWS_WHAT)
	twsRFC1337 = uint32(bpf.TcpwatchTwTimewaitSeenTW_TWS_F_RFC1337)
	twsSegTS   = uint32(bpf.TcpwatchTwTimewaitSeenTW_TWS_F_SEG_TS)
	twsTwTS    = uint32(bpf.TcpwatchTwTimewaitSeenTW_TWS_F_TW_TS)
)

// SeqNewer says whether the segment's sequence number is past the old
// connection's (after(seq, tw_rcv_nxt), modulo 2^32), and by how much
// (negative: behind).
func (f *TimeWaitFacts) SeqNewer() (bool, int32) {
	d := int32(f.Seq - f.RcvNxt)
	return d > 0, d
}

// TSNewer says whether the segment's timestamp is newer than the last
// one the TIME_WAIT kept; false when either is missing.
func (f *TimeWaitFacts) TSNewer() bool {
	return f.HasTSval && f.PAWS && int32(f.TSRecent-f.TSval) < 0
}

// decodeTimeWait moves the fields a KindTimeWait record reuses (see
// bpf/record.h) into ev.TimeWait.
func decodeTimeWait(r *bpf.TcpwatchEvent, ev *Event) {
	d := uint32(r.Detail)
	ev.TimeWait = TimeWaitFacts{Seen: TimeWaitSeen(d & twsWhat), RFC1337: d&twsRFC1337 != 0,
		Seq: r.PacketsOut, RcvNxt: r.RetransOut, TSval: r.BytesInFlight, HasTSval: d&twsSegTS != 0,
		TSRecent: r.TotalRetrans, PAWS: d&twsTwTS != 0, Left: time.Duration(r.RtoMs) * time.Millisecond}
	ev.PacketsOut, ev.RetransOut, ev.BytesInFlight, ev.TotalRetrans, ev.RTO = 0, 0, 0, 0, 0
	ev.Detail = int32(ev.TimeWait.Seen)
}

// encodeTimeWait is decodeTimeWait's inverse.
func encodeTimeWait(ev *Event, r *bpf.TcpwatchEvent) {
	f := &ev.TimeWait
	d := uint32(f.Seen)
	if f.RFC1337 {
		d |= twsRFC1337
	}
	if f.HasTSval {
		d |= twsSegTS
	}
	if f.PAWS {
		d |= twsTwTS
	}
	r.Detail = int32(d)
	r.PacketsOut, r.RetransOut, r.BytesInFlight, r.TotalRetrans = f.Seq, f.RcvNxt, f.TSval, f.TSRecent
	r.RtoMs = uint32(f.Left / time.Millisecond)
}
