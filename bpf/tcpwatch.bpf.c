//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcpwatch's kernel half: watches the four TCP code paths that decide how a
 * connection fails (tcp_retransmit_skb, the keepalive and retransmission
 * timers, tcp_set_state, tcp_send_active_reset) and the tracepoints that
 * complete the story, and sends one `struct event` (record.h) per happening
 * to user space.
 *
 * Every hook is a BTF tracepoint (tp_btf): fentry and kprobes are not
 * available everywhere tcpwatch must run, tracepoints are. This file holds
 * only the programs, thin; the rest is split by concern:
 *
 *   config.h     the loader's settings (one const volatile struct)
 *   maps.h       every map, with who writes, reads and deletes it
 *   counters.h   the counters of records lost and of skips (shared with exposure.bpf.c)
 *   sockinfo.h   per-socket owner storage, written in task context only
 *   filter.h     netns/port filters, decided before a record is reserved
 *   fill.h       filling a record: direct loads from a trusted tcp_sock,
 *                probe reads from the timer's socket
 *   emit.h       ring buffer reserve/submit
 *   keepalive.h  the TCP timers' entry/exit windows (keepalive, retransmission, window probe)
 *   drops.h      dropped packets of connections in trouble (skb:kfree_skb)
 *   timewait.h   SYNs and RSTs a TIME_WAIT dropped (skb:kfree_skb's rx_sk, --all)
 *   listeners.h  SYN-ACK retransmissions per listener (tcp:tcp_retransmit_synack), in a map
 *   lifecycle.h  --all: a normal lifecycle summarised, told in one record
 *
 * A connection that is born and dies normally costs a few loads per
 * tracepoint, its cookie and owner at connect (in a slot, not socket
 * storage) and no record, unless the user asked for everything (emit_all).
 * A connection its peer closed first costs nothing more: a process that
 * never closes it is found by watch mode's socket scan (exposure.bpf.c),
 * which marks that socket notable, so only a stuck socket's end is sent
 * (close_wait_stuck).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "record.h"
#include "config.h"
#include "maps.h"
#include "sockinfo.h"
#include "fill.h"
#include "filter.h"
#include "emit.h"
#include "drops.h"
#include "keepalive.h"
#include "timewait.h"
#include "listeners.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define IPPROTO_TCP 6

/* Unused except to make bpf2go emit the Go types. */
const struct event *unused_event __attribute__((unused));
const enum tw_event_kind *unused_kind __attribute__((unused));
const enum tw_event_flag *unused_flag __attribute__((unused));
const enum tw_owner_source *unused_owner_source __attribute__((unused));
const enum tw_nf_hook *unused_nf_hook __attribute__((unused));
const enum tw_counter *unused_counter __attribute__((unused));
const enum tw_rst_reason *unused_rst_reason __attribute__((unused));
const enum tw_tcp_limit *unused_tcp_limit __attribute__((unused));
const enum tw_timewait_seen *unused_timewait_seen __attribute__((unused));
const struct tw_listen_key *unused_listen_key __attribute__((unused));
const struct tw_synack *unused_synack __attribute__((unused));
const struct lifecycle *unused_lifecycle __attribute__((unused));

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tw_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	struct sock_info *info = NULL;
	int notable = 0, always = 0, noport = 0;
	struct tw_window *w = NULL;
	struct life_slot *ls = NULL;

	if (tw_cfg.summarize && oldstate == TCP_SYN_RECV)
		life_adopt_clone(sk); /* an accepted socket's first change after its clone */

	switch (newstate) {
	case TCP_SYN_SENT: /* connect() */
		if (!tw_cfg.emit_all || tw_cfg.summarize) {
			__u64 cookie = bpf_get_socket_cookie((void *)sk);
			if (!tw_cfg.emit_all || (ls = life_claim_cookie(cookie))) {
				/* Storage only if it becomes notable: the owner waits in a slot. */
				__u64 now = bpf_ktime_get_ns(); /* one clock read for both */
				remember_connect(cookie, now);
				if (ls)
					life_step_at(ls, sk, oldstate, newstate, now);
				return 0;
			}
		}
		info = sock_info_create(sk);
		set_owner(info, TW_OWNER_CONNECT);
		break;
	case TCP_LISTEN: /* listen(): rare, always told, so user space can name accepted sockets' owners */
		info = sock_info_create(sk);
		set_owner(info, TW_OWNER_LISTEN);
		always = 1;
		break;
	case TCP_ESTABLISHED:
		/*
		 * Every established socket gets its cookie: the timer programs
		 * can only read it. Most have one already (a connect's, an
		 * adopted clone's): a load, not a helper call.
		 */
		if (!sk->__sk_common.skc_cookie.counter)
			bpf_get_socket_cookie((void *)sk);
		if (!tw_cfg.emit_all)
			return 0;
		info = sock_info_lookup(sk);
		break;
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK: /* close() or exit, in the owner's task */
		if (oldstate != (newstate == TCP_FIN_WAIT1 ? TCP_ESTABLISHED : TCP_CLOSE_WAIT)) {
			if (!tw_cfg.emit_all)
				return 0;
			info = sock_info_lookup(sk);
			break;
		}
		info = closing(sk);
		notable = info && (info->flags & TW_SK_EXITING);
		break;
	case TCP_CLOSE:
		w = window_for(sk);
		if (w)
			w->killed = 1;
		always = oldstate == TCP_LISTEN;
		if (always)
			synack_forget(sk);
		/*
		 * tcp_v4/v6_connect() sets SYN_SENT, then inet_hash_connect()
		 * looks for a local port toward the destination; when every one
		 * is taken (TIME_WAIT included) it fails with EADDRNOTAVAIL and
		 * the socket goes back to CLOSE with no port and no SYN sent.
		 * A connect that failed later has lost skc_num too (inet_put_port
		 * runs before this tracepoint) but keeps inet_sport.
		 */
		noport = oldstate == TCP_SYN_SENT && !sk->__sk_common.skc_num &&
			 !BPF_CORE_READ((const struct inet_sock *)sk, inet_sport);
		/* A connection that dies with an error is always worth a story. */
		notable = sk->sk_err != 0 || noport;
		info = notable ? sock_info_create(sk) : sock_info_lookup(sk);
		/*
		 * A connection in trouble ends: it leaves the troubled map now,
		 * and its destroy is told even if nothing made it notable.
		 */
		if (troubled_at_close(sk)) {
			if (!info)
				info = sock_info_create(sk);
			if (info)
				info->flags |= TW_SK_TROUBLED_END;
		}
		break;
	default:
		/*
		 * The steps in between (handshake, FIN received, FIN_WAIT2) are
		 * not sent without --all, even for a notable socket: its
		 * records carry their state.
		 */
		if (!tw_cfg.emit_all)
			return 0;
		/*
		 * An accepted socket, cloned from its listener: the listener's
		 * record says it all. Its slot waits for its cookie (life_clones).
		 */
		if (tw_cfg.summarize && oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV && life_defer_clone(sk))
			return 0;
		info = sock_info_lookup(sk);
	}

	/*
	 * --all: a state change of a socket being summarised waits in its
	 * slot (lifecycle.h), unless it is news of its own (an error, an
	 * exiting owner, a timer's doing, a notable socket: emit_sk sends the
	 * states so far first).
	 */
	if (tw_cfg.summarize && !notable && !always && !w && !(info && (info->flags & TW_SK_NOTABLE)) &&
	    (ls = life_held(sk))) {
		life_step(ls, sk, oldstate, newstate);
		if ((newstate == TCP_CLOSE &&
		     !sock_flag_set(sk->__sk_common.skc_flags, bpf_core_enum_value(enum sock_flags, SOCK_DEAD))) ||
		    ls->steps >= TW_LIFE_STEPS)
			life_send_sk(ls, sk, info, 0);
		return 0;
	}

	if (!wanted(info, notable) && !always)
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_STATE);
	if (!e)
		return 0;
	e->state = newstate;
	e->old_state = oldstate;
	if (w && w->kind == TW_WIN_KEEPALIVE)
		e->flags |= TW_F_IN_KA_TIMER;
	if (noport)
		e->flags |= TW_F_NO_LOCAL_PORT;
	submit(e);
	return 0;
}

static __always_inline int handle_retransmit(const struct sock *sk, int err)
{
	if (!sk)
		return 0;
	/* Inside the retransmission timer's window: the tracepoint told it. */
	struct tw_window *w = window_for(sk);
	if (w)
		w->rtx_seen = 1;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return 0;
	__u8 state = sk->__sk_common.skc_state;
	__u8 ca_state = BPF_CORE_READ_BITFIELD(&tp->inet_conn, icsk_ca_state);
	/*
	 * An RTO retransmission (the peer stopped acknowledging) or a SYN
	 * retransmission is the start of a stall. Fast retransmits and loss
	 * probes are routine: counted by the kernel (total_retrans), not sent.
	 */
	int rto = ca_state == TCP_CA_Loss || state == TCP_SYN_SENT || state == TCP_SYN_RECV;
	if (!tw_cfg.emit_all && !rto)
		return 0;
	/* Marked at the timer's entry already, unless the timer was deferred (owned by the user). */
	if (rto && !w)
		mark_troubled(sk);
	struct sock_info *info = rto ? sock_info_create(sk) : sock_info_lookup(sk);
	if (!wanted(info, rto))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_RETRANSMIT);
	if (!e)
		return 0;
	e->detail = err;
	submit(e);
	return 0;
}

/* 6.17+: also fires for failed attempts, with their error. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tw_retransmit_err, const struct sock *sk, const struct sk_buff *skb, int err)
{
	return handle_retransmit(sk, err);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tw_retransmit, const struct sock *sk, const struct sk_buff *skb)
{
	return handle_retransmit(sk, 0);
}

/* sk_rst_reason is not UAPI: its values come from the running kernel. */
static __always_inline int reason_is_owner_close(int reason)
{
	if (reason < 0 || !bpf_core_enum_value_exists(enum sk_rst_reason, SK_RST_REASON_TCP_ABORT_ON_CLOSE))
		return 0;
	return reason == bpf_core_enum_value(enum sk_rst_reason, SK_RST_REASON_TCP_ABORT_ON_CLOSE) ||
	       reason == bpf_core_enum_value(enum sk_rst_reason, SK_RST_REASON_TCP_ABORT_ON_LINGER) ||
	       reason == bpf_core_enum_value(enum sk_rst_reason, SK_RST_REASON_TCP_DISCONNECT_WITH_DATA);
}

/* A reset sent with no full socket behind it (--all only): the tuple comes from the packet. */
static __always_inline void emit_reply_reset_nosock(const struct sk_buff *skb, int reason)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u32 netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	struct tcphdr tcp;
	if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th))
		return;
	/* The reset answers the received segment: it goes back to its source. */
	__u16 sport = bpf_ntohs(tcp.dest), dport = bpf_ntohs(tcp.source);
	if (!filter_pass(netns, sport, dport))
		return;
	struct event *e = reserve(TW_EV_SEND_RESET);
	if (!e)
		return;
	e->flags = TW_F_REPLY_RESET | TW_F_NO_SOCK;
	e->detail = reason;
	e->netns = netns;
	e->sport = sport;
	e->dport = dport;
	__u8 version = 0;
	bpf_probe_read_kernel(&version, 1, head + nh);
	if ((version >> 4) == 6) {
		struct ipv6hdr ip6;
		bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh);
		e->family = AF_INET6;
		__builtin_memcpy(e->saddr, &ip6.daddr, 16);
		__builtin_memcpy(e->daddr, &ip6.saddr, 16);
	} else {
		struct iphdr ip4;
		bpf_probe_read_kernel(&ip4, sizeof(ip4), head + nh);
		e->family = AF_INET;
		__builtin_memcpy(e->saddr, &ip4.daddr, 4);
		__builtin_memcpy(e->daddr, &ip4.saddr, 4);
	}
	submit(e);
}

static __always_inline int handle_send_reset(const struct sock *sk, const struct sk_buff *skb,
					     int reason)
{
	/*
	 * Replies to a received segment carry an skb; on 6.10+ sk may be NULL
	 * or a request/timewait socket. Only a full socket has our figures.
	 */
	__u8 state = sk ? sk->__sk_common.skc_state : 0;
	int full = sk && state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV;
	if (!full) {
		if (tw_cfg.emit_all && skb)
			emit_reply_reset_nosock(skb, reason);
		return 0;
	}
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	/* A reset is notable: the socket gets storage. */
	struct sock_info *info = sock_info_create(sk);
	/*
	 * close()/disconnect with unread data or SO_LINGER 0: the owner is
	 * acting. Before 6.10 the kernel gives no reason; those paths are the
	 * ones that set TCP_CLOSE before they reset (tcp_close,
	 * tcp_disconnect), while a timer's or ss -K's reset comes first.
	 */
	int owner_close = reason == TW_RST_REASON_UNKNOWN ? state == TCP_CLOSE : reason_is_owner_close(reason);
	if (!skb && owner_close)
		set_closer(info);
	if (!wanted(info, 1))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_SEND_RESET);
	if (!e)
		return 0;
	e->detail = reason;
	if (skb)
		e->flags |= TW_F_REPLY_RESET;
	struct tw_window *w = skb ? NULL : window_for(sk);
	if (w && w->kind == TW_WIN_KEEPALIVE)
		e->flags |= TW_F_IN_KA_TIMER;
	submit(e);
	return 0;
}

/* 6.10+: the kernel says why. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tw_send_reset_reason, const struct sock *sk, const struct sk_buff *skb,
	     enum sk_rst_reason reason)
{
	return handle_send_reset(sk, skb, (int)reason);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tw_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, TW_RST_REASON_UNKNOWN);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tw_receive_reset, struct sock *sk)
{
	if (!sk)
		return 0;
	struct sock_info *info = sock_info_create(sk);
	if (!wanted(info, 1))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_RECV_RESET);
	if (e)
		submit(e);
	return 0;
}

SEC("tp_btf/inet_sk_error_report")
int BPF_PROG(tw_error_report, const struct sock *sk)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	int err = sk->sk_err;
	/* error == 0 is ICMP error-queue noise, not an error the application sees. */
	if (!err)
		return 0;
	closed_in_window(sk);
	struct sock_info *info = sock_info_create(sk);
	if (!wanted(info, 1))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_ERROR);
	if (!e)
		return 0;
	e->detail = err;
	submit(e);
	return 0;
}

SEC("tp_btf/tcp_cong_state_set")
int BPF_PROG(tw_cong_state, struct sock *sk, const __u8 ca_state)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	/* Fires before the store: the old state is still in the socket. */
	__u8 old = BPF_CORE_READ_BITFIELD(&tp->inet_conn, icsk_ca_state);
	if (old == ca_state)
		return 0;
	/*
	 * By default only the end of an RTO episode matters: Loss -> anything.
	 * It is always news: before 6.17 the episode's retransmissions may
	 * have been seen only at the retransmission timer, whose socket
	 * pointer cannot mark the socket notable.
	 */
	int episode_end = old == TCP_CA_Loss;
	if (!tw_cfg.emit_all && !episode_end)
		return 0;
	if (episode_end && ca_state == TCP_CA_Open)
		unmark_troubled(sk);
	struct sock_info *info = episode_end ? sock_info_create(sk) : sock_info_lookup(sk);
	if (!wanted(info, episode_end))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_CONG_STATE);
	if (!e)
		return 0;
	e->old_state = old;
	e->ca_state = ca_state;
	submit(e);
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tw_destroy_sock, struct sock *sk)
{
	closed_in_window(sk);
	ka_forget(sk);
	troubled_forget(sk);
	/*
	 * The storage goes with the socket; only a notable one is told, or
	 * one that went to CLOSE in trouble (a window-probe episode its owner
	 * closed: tell its end). Its troubled entry went at that CLOSE.
	 */
	struct sock_info *info = sock_info_lookup(sk);
	int notable = info && (info->flags & (TW_SK_NOTABLE | TW_SK_TROUBLED_END));
	if (tw_cfg.summarize && !notable) {
		/* A normal lifecycle's one record, which stands for this one too. */
		struct life_slot *ls = life_held(sk);
		if (ls) {
			life_send_sk(ls, sk, info, TW_F_LIFE_DESTROYED);
			return 0;
		}
	}
	if (!wanted(info, notable))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_DESTROY);
	if (e)
		submit(e);
	return 0;
}

/* Runs for every kernel timer: two compares for all but the two TCP timers. */
SEC("tp_btf/timer_expire_entry")
int BPF_PROG(tw_timer_entry, struct timer_list *timer, unsigned long baseclk)
{
	__u64 fn = (__u64)timer->function;
	int ka = fn == (__u64)&tcp_keepalive_timer;
	if (!ka && fn != (__u64)&tcp_write_timer)
		return 0;
	struct tw_window *w = window();
	if (!w)
		return 0;
	w->timer = 0;
	if (ka)
		keepalive_entry(w, timer);
	else
		write_timer_entry(w, timer);
	return 0;
}

SEC("tp_btf/timer_expire_exit")
int BPF_PROG(tw_timer_exit, struct timer_list *timer)
{
	struct tw_window *w = window();
	if (!w || !w->timer || w->timer != (__u64)timer)
		return 0;
	w->timer = 0;
	__u16 flags;
	if (w->kind == TW_WIN_KEEPALIVE) {
		flags = keepalive_exit(w);
		w->entry.kind = TW_EV_KEEPALIVE;
	} else {
		flags = write_timer_exit(w);
	}
	if (!flags || !record_passes(&w->entry))
		return 0;
	if (tw_cfg.summarize)
		life_send_entry(&w->entry); /* a summarised socket's states come first */
	struct event *e = reserve(w->entry.kind);
	if (!e)
		return 0;
	__u64 ts = e->ts_ns;
	__builtin_memcpy(e, &w->entry, sizeof(*e));
	e->ts_ns = ts;
	e->flags |= flags;
	submit(e);
	return 0;
}

/*
 * 6.11+: the receiving socket comes too. The headers say as much for the
 * troubled connections; a timewait socket's is what only it can say.
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tw_drop_rxsk, struct sk_buff *skb, void *location, enum skb_drop_reason reason, struct sock *rx_sk)
{
	if (tw_cfg.emit_all && rx_sk)
		timewait_segment(skb, rx_sk);
	return handle_drop(skb, (int)reason, (__u64)location);
}

/* 5.17 - 6.10. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tw_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return handle_drop(skb, (int)reason, (__u64)location);
}

/* The server side of a handshake that does not complete (4.15+): counted per listener, no record. */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(tw_synack_retransmit, const struct sock *sk, const struct request_sock *req)
{
	return handle_synack_retransmit(sk, req);
}
