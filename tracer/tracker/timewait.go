package tracker

import (
	"net/netip"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// The notices of what a SYN or an RST did to a 4-tuple this side holds in
// TIME_WAIT (KindTimeWait records, --all, 6.11+).
const (
	NoticeTimeWaitSynRejected = "time_wait_syn_rejected" // a SYN not newer than the old connection: answered with its ACK
	NoticeTimeWaitRstEnded    = "time_wait_rst_ended"    // an RST ended the TIME_WAIT early (tcp_rfc1337=0)
	NoticeTimeWaitRstIgnored  = "time_wait_rst_ignored"  // an RST the TIME_WAIT ignored (tcp_rfc1337=1, or out of window)
	// The same from the connecting side: its SYN was answered with an ACK
	// of an older connection on the 4-tuple, which it reset.
	NoticeSynAnsweredOldAck = "syn_answered_old_ack"
)

// NoticeKinds are every kind of notice the tracker tells (opened.go and
// above): output/words words each.
var NoticeKinds = []string{"time_wait_reuse", "time_wait_syn_accepted",
	NoticeTimeWaitSynRejected, NoticeTimeWaitRstEnded, NoticeTimeWaitRstIgnored, NoticeSynAnsweredOldAck}

// onTimeWait tells what a segment did to a TIME_WAIT. The timewait socket
// belongs to nobody any more: the owner named is the listener's on its
// port (a server that closed first), when known.
func (t *Tracker) onTimeWait(ev *wire.Event) {
	key := twKeyOf(tupleKey{ev.NetNS, ev.Local, ev.Remote})
	n := &Notice{Time: ev.Time, Cookie: ev.Cookie, Local: ev.Local, Remote: ev.Remote, NetNS: ev.NetNS,
		TimeWait: ev.TimeWait, Owner: t.listeners[listenKey{ev.NetNS, ev.Local.Port()}]}
	switch ev.TimeWait.Seen {
	case wire.TimeWaitSynAnswered, wire.TimeWaitSynUnanswered:
		n.Kind = NoticeTimeWaitSynRejected
	case wire.TimeWaitRstEnded:
		n.Kind = NoticeTimeWaitRstEnded
	case wire.TimeWaitRstKept:
		n.Kind = NoticeTimeWaitRstIgnored
	default:
		return
	}
	// Age: since the close that left the TIME_WAIT, when this tracker saw
	// it; else what its timer says (it is restarted by some segments).
	if at, ok := t.timeWait.Get(key); ok {
		n.Age = ev.Mono - at
	} else if ev.TimeWait.Left > 0 && ev.TimeWait.Left <= timeWaitLen {
		n.Age = timeWaitLen - ev.TimeWait.Left
	}
	if ev.TimeWait.Seen == wire.TimeWaitRstEnded {
		// The 4-tuple is free: a connection that takes it next took no TIME_WAIT over.
		t.timeWait.Delete(key)
	}
	if t.cfg.Notices != nil {
		t.cfg.Notices(n)
	}
}

// onSynAnsweredOldAck: this side, connecting, answered with RST an ACK
// that acknowledged nothing it sent. tcp_rcv_synsent_state_process() sends
// no other reset in reply while in SYN_SENT (6.10+ names it
// TCP_INVALID_ACK_SEQUENCE): the peer answered from another connection on
// the same 4-tuple, its TIME_WAIT (a SYN not newer) or one this side
// forgot. Told with --all, every time (each SYN the peer answers so).
func (t *Tracker) onSynAnsweredOldAck(c *conn, ev *wire.Event) {
	if t.cfg.Notices == nil {
		return
	}
	t.rememberOldAckReset(c.remote, c.local, ev.Mono)
	t.cfg.Notices(&Notice{Time: ev.Time, Kind: NoticeSynAnsweredOldAck, Cookie: c.cookie, Local: c.local, Remote: c.remote,
		NetNS: c.netns, Owner: t.ownerOf(c), CgroupID: c.cgroupID, ResetReason: t.cfg.ResetReasons.Name(ev.Detail)})
}

// maxOldAckResets bounds oldAckResets: each is a connect() that met an
// old ACK, a few a minute on a host that reuses ports this way.
const maxOldAckResets = 4096

// rememberOldAckReset notes, as the peer sees the 4-tuple (its local,
// its remote), that this host reset the old ACK its TIME_WAIT sent.
// Entries older than a TIME_WAIT are of no use: they go when the map
// fills, and all of them if it is still full.
func (t *Tracker) rememberOldAckReset(peerLocal, peerRemote netip.AddrPort, now time.Duration) {
	if t.oldAckResets == nil {
		t.oldAckResets = make(map[[2]netip.AddrPort]time.Duration)
	}
	if len(t.oldAckResets) >= maxOldAckResets {
		for k, at := range t.oldAckResets {
			if now-at > timeWaitLen {
				delete(t.oldAckResets, k)
			}
		}
		if len(t.oldAckResets) >= maxOldAckResets {
			clear(t.oldAckResets)
		}
	}
	t.oldAckResets[[2]netip.AddrPort{peerLocal, peerRemote}] = now
}
