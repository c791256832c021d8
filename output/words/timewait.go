package words

import (
	"fmt"

	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// NoticeEntry words one kind of notice (told with --all): what became of
// a 4-tuple in TIME_WAIT. Notices is their registry.
type NoticeEntry struct {
	Kind        string
	Summary     func(*tracker.Notice) string
	Explanation func(*tracker.Notice) string
}

// Notices are every notice the tracker tells.
var Notices = []NoticeEntry{
	{Kind: "time_wait_reuse", Summary: func(n *tracker.Notice) string {
		// Concatenated, not formatted: with --all a churning host tells
		// up to one of these a connection.
		return "a new connection took over a 4-tuple still in TIME_WAIT (closed " + Secs(n.Age) + " ago)"
	}, Explanation: func(n *tracker.Notice) string {
		return fmt.Sprintf("The earlier connection on %s -> %s closed actively %s ago; its TIME_WAIT (60 s, TCP_TIMEWAIT_LEN) guards against old duplicates. connect() reused it anyway, which tcp_tw_reuse allows for outgoing connections once the TIME_WAIT is over a second old, with TCP timestamps to tell old segments from new (PAWS).",
			n.Local, n.Remote, Secs(n.Age))
	}},
	{Kind: "time_wait_syn_accepted", Summary: func(n *tracker.Notice) string {
		if n.CauseUnseen {
			return "the peer's SYN reopened a 4-tuple this side held in TIME_WAIT (closed " + Secs(n.Age) + " ago): its sequence number or timestamp was newer, or an RST had ended the TIME_WAIT first (this kernel, before 6.11, does not show which)"
		}
		return "the peer's SYN reopened a 4-tuple this side held in TIME_WAIT (closed " + Secs(n.Age) + " ago): its sequence number or timestamp was newer"
	}, Explanation: func(n *tracker.Notice) string {
		if n.CauseUnseen {
			return fmt.Sprintf("This side closed %s -> %s first, %s ago, and kept the 4-tuple in TIME_WAIT (60 s, TCP_TIMEWAIT_LEN). A new connection from the peer now has it. Either tcp_timewait_state_process() accepted the peer's SYN (TCP_TW_SYN: its timestamp newer than the last one seen, PAWS, or without timestamps its sequence number past the old connection's), or it had answered an older SYN with the old connection's ACK, the peer's RST to that ACK ended the TIME_WAIT (tcp_rfc1337=0), and the peer's next SYN reached the listener. The kernel drops those segments in TIME_WAIT without naming the timewait socket before 6.11 (kfree_skb's rx_sk), so this kernel cannot show which; 6.11+ tells time_wait_syn_rejected and time_wait_rst_ended.",
				n.Local, n.Remote, Secs(n.Age))
		}
		return fmt.Sprintf("This side closed %s -> %s first, %s ago, and kept the 4-tuple in TIME_WAIT (60 s, TCP_TIMEWAIT_LEN). A SYN for it arrived: tcp_timewait_state_process() accepts it (TCP_TW_SYN) when its timestamp is newer than the last one seen (PAWS) or, without timestamps, its sequence number is past the old connection's; the TIME_WAIT ends and the listener takes the new connection. An older SYN is answered with the old connection's ACK instead (time_wait_syn_rejected), and the peer's RST to that ACK ends the TIME_WAIT early unless tcp_rfc1337=1 (time_wait_rst_ended).",
			n.Local, n.Remote, Secs(n.Age))
	}},
	{Kind: tracker.NoticeTimeWaitSynRejected, Summary: synRejectedSummary, Explanation: synRejectedExplanation},
	{Kind: tracker.NoticeTimeWaitRstEnded, Summary: func(n *tracker.Notice) string {
		return fmt.Sprintf("an RST ended this 4-tuple's TIME_WAIT%s, %s before its 60s were up (tcp_rfc1337=0): the 4-tuple is free for a new connection",
			closedAgo(n), Secs(n.TimeWait.Left))
	}, Explanation: func(n *tracker.Notice) string {
		return fmt.Sprintf("This side closed %s -> %s first and held the 4-tuple in TIME_WAIT, which lasts 60 s (TCP_TIMEWAIT_LEN) to absorb the old connection's late segments and to acknowledge again a last FIN whose ACK was lost. An RST arrived at the sequence number the old connection expected next (seq %d = tw_rcv_nxt); with net.ipv4.tcp_rfc1337=0, the default, tcp_timewait_state_process() kills the TIME_WAIT at once (RFC 1337 calls this TIME-WAIT assassination). That is how a client whose SYN was answered with the old ACK gets through: its RST ends the TIME_WAIT and its next SYN reaches the listener. With tcp_rfc1337=1 the RST would have been ignored and the TIME_WAIT would have run its %s.",
			n.Local, n.Remote, n.TimeWait.Seq, Secs(n.TimeWait.Left))
	}},
	{Kind: tracker.NoticeTimeWaitRstIgnored, Summary: func(n *tracker.Notice) string {
		f := &n.TimeWait
		why := "tcp_rfc1337=1 keeps it"
		if f.Seq != f.RcvNxt {
			why = fmt.Sprintf("its sequence number %d is not the %d the old connection expected next", f.Seq, f.RcvNxt)
		}
		return fmt.Sprintf("an RST reached this 4-tuple in TIME_WAIT%s and was ignored: %s; the TIME_WAIT runs its last %s", closedAgo(n), why, Secs(f.Left))
	}, Explanation: func(n *tracker.Notice) string {
		f := &n.TimeWait
		if f.Seq != f.RcvNxt {
			return fmt.Sprintf("This side holds %s -> %s in TIME_WAIT (60 s, TCP_TIMEWAIT_LEN). tcp_timewait_state_process() lets an RST end it only at the exact sequence number the old connection expected next (tw_rcv_nxt %d); this one carried %d, so it was dropped and the TIME_WAIT stays.",
				n.Local, n.Remote, f.RcvNxt, f.Seq)
		}
		return fmt.Sprintf("This side holds %s -> %s in TIME_WAIT (60 s, TCP_TIMEWAIT_LEN). An RST arrived at the sequence number the old connection expected next (%d), which with tcp_rfc1337=0 would have ended it (TIME-WAIT assassination); net.ipv4.tcp_rfc1337=1 follows RFC 1337 and ignores it, so the TIME_WAIT keeps guarding the 4-tuple. A client whose SYN was answered with the old ACK keeps retrying until it ends.",
			n.Local, n.Remote, f.Seq)
	}},
	{Kind: tracker.NoticeSynAnsweredOldAck, Summary: func(n *tracker.Notice) string {
		reason := ""
		if n.ResetReason != "" {
			reason = " (" + n.ResetReason + ")"
		}
		return "this side's SYN was answered with an ACK of an older connection on this 4-tuple: the peer still holds it (in TIME_WAIT, this SYN not newer, or a connection this side forgot); this side reset it" + reason + " and retries"
	}, Explanation: func(n *tracker.Notice) string {
		return fmt.Sprintf("%s was connecting to %s (SYN_SENT) and got an ACK that acknowledged nothing it had sent: tcp_rcv_synsent_state_process() answers such an ACK with RST, at the sequence number the ACK acknowledged, and keeps retrying its SYN. The peer answered from another connection on the same 4-tuple: its TIME_WAIT does so when the SYN is not newer than the old connection (no timestamps and a sequence number behind it, or an older timestamp: time_wait_syn_rejected on the peer), and a peer that still has a connection this side forgot (a reboot here) answers with a challenge ACK (RFC 5961). The RST ends the peer's TIME_WAIT unless its tcp_rfc1337=1 (or resets the forgotten connection), and the next SYN gets through; with tcp_rfc1337=1 the SYNs keep meeting the old ACK until the peer's 60 s TIME_WAIT ends, or connect() times out first.",
			n.Local, n.Remote)
	}},
}

func noticeEntry(kind string) *NoticeEntry {
	for i := range Notices {
		if Notices[i].Kind == kind {
			return &Notices[i]
		}
	}
	return nil
}

// NoticeSummary and NoticeExplanation word a notice.
func NoticeSummary(n *tracker.Notice) string {
	if e := noticeEntry(n.Kind); e != nil {
		return e.Summary(n)
	}
	return n.Kind
}

// NoticeExplanation teaches what the kernel allowed.
func NoticeExplanation(n *tracker.Notice) string {
	if e := noticeEntry(n.Kind); e != nil {
		return e.Explanation(n)
	}
	return ""
}

func closedAgo(n *tracker.Notice) string {
	if n.Age <= 0 {
		return ""
	}
	return " (closed " + Secs(n.Age) + " ago)"
}

// synNotNewer says why tcp_timewait_state_process() did not accept the SYN.
func synNotNewer(f *wire.TimeWaitFacts) string {
	newer, d := f.SeqNewer()
	switch {
	case newer || f.TSNewer():
		return "it was newer, but no listener took it"
	case f.PAWS && f.HasTSval:
		return fmt.Sprintf("its timestamp %d is not newer than the peer's last %d (PAWS)", f.TSval, f.TSRecent)
	case d == 0:
		return fmt.Sprintf("its sequence number %d is the old connection's next (tw_rcv_nxt), not past it, and no timestamps tell it newer", f.Seq)
	}
	return fmt.Sprintf("its sequence number %d is %d behind the old connection's next (tw_rcv_nxt %d), and no timestamps tell it newer", f.Seq, -int64(d), f.RcvNxt)
}

func synRejectedSummary(n *tracker.Notice) string {
	answer := "answered with the old connection's ACK"
	if n.TimeWait.Seen == wire.TimeWaitSynUnanswered {
		answer = "the old connection's ACK held back (tcp_invalid_ratelimit)"
	}
	return fmt.Sprintf("a SYN met this 4-tuple in TIME_WAIT%s and was not accepted: %s; %s", closedAgo(n), synNotNewer(&n.TimeWait), answer)
}

func synRejectedExplanation(n *tracker.Notice) string {
	return fmt.Sprintf("This side closed %s -> %s first and holds the 4-tuple in TIME_WAIT for 60 s (TCP_TIMEWAIT_LEN; %s left). tcp_timewait_state_process() reopens it for a SYN only if the SYN is newer than the old connection: a timestamp newer than the last one seen (PAWS), or, without timestamps, a sequence number past the old connection's next (tw_rcv_nxt %d); this SYN's was %d. It was not, so the SYN was dropped and answered with the old connection's ACK (TCP_TW_ACK). The peer, in SYN_SENT, finds that ACK acknowledges nothing it sent and answers with RST, which ends the TIME_WAIT (tcp_rfc1337=0, time_wait_rst_ended) so its retransmitted SYN reaches the listener; with tcp_rfc1337=1 its SYNs meet the old ACK until the TIME_WAIT is over (or its connect() times out first).",
		n.Local, n.Remote, Secs(n.TimeWait.Left), n.TimeWait.RcvNxt, n.TimeWait.Seq)
}
