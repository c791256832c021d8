/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What a SYN or an RST did to a 4-tuple held in TIME_WAIT (issue 20,
 * --all only): the two shapes of article 004 no other hook shows.
 *
 * A timewait socket has no tracepoint of its own, and the ACK it sends
 * (tcp_v4_timewait_ack) none either. But every segment that
 * tcp_timewait_state_process() does not hand to a listener ends at
 * tcp_v4_rcv()'s (tcp_v6_rcv()'s) discard_it, which frees it with
 * sk_skb_reason_drop(sk, skb, reason): skb:kfree_skb with rx_sk = the
 * timewait socket (6.11+; before, kfree_skb names no socket and these
 * records are not made). What the kernel decided is read back from the
 * timewait socket right after it decided:
 *
 *  - a SYN (no ACK) it dropped was not newer than the old connection
 *    (sequence number not past tw_rcv_nxt, timestamp not newer than
 *    tw_ts_recent) or found no listener: TCP_TW_ACK, the old connection's
 *    ACK went out unless tcp_invalid_ratelimit held it back, which
 *    tcp_oow_rate_limited() records by stamping tw_last_oow_ack_time with
 *    the current jiffies;
 *  - an RST: with tcp_rfc1337=0 and the expected sequence number the
 *    TIME_WAIT is killed (inet_twsk_deschedule_put: unhashed, so its
 *    skc_nulls_node.pprev is NULL); otherwise it stays. A freed timewait
 *    socket stays readable here: its slab is SLAB_TYPESAFE_BY_RCU and
 *    this runs inside the receive path's RCU section.
 *
 * The FIN_WAIT2 remnants of orphans (tw_substate FIN_WAIT2) follow other
 * rules (tcp_rcv_state_process's) and are not told. Cost: one load of
 * rx_sk's state for every drop that names a socket, only with --all.
 */
#ifndef TW_TIMEWAIT_H
#define TW_TIMEWAIT_H

#include "emit.h"
#include "drops.h"

#define TW_TCPOPT_EOL 0
#define TW_TCPOPT_NOP 1
#define TW_TCPOPT_TIMESTAMP 8
#define TW_TCPOLEN_TIMESTAMP 10

/*
 * The TSval of the segment's timestamp option; 0 when it carries none.
 * The walk is unrolled over constant offsets: each option's start is
 * compared with the offset, never used as an index the verifier must bound.
 */
static __always_inline int segment_tsval(const unsigned char *opts_at, int optlen, __u32 *tsval)
{
	__u8 opts[48] = {};
	if (optlen <= 0 || optlen > 40 || bpf_probe_read_kernel(opts, 40, opts_at))
		return 0;
	int next = 0;
#pragma clang loop unroll(full)
	for (int p = 0; p < 31; p++) {
		if (p != next)
			continue;
		if (p >= optlen || opts[p] == TW_TCPOPT_EOL)
			return 0;
		if (opts[p] == TW_TCPOPT_NOP) {
			next = p + 1;
			continue;
		}
		__u8 len = opts[p + 1];
		if (opts[p] == TW_TCPOPT_TIMESTAMP && len == TW_TCPOLEN_TIMESTAMP) {
			if (p + TW_TCPOLEN_TIMESTAMP > optlen)
				return 0;
			*tsval = ((__u32)opts[p + 2] << 24) | ((__u32)opts[p + 3] << 16) | ((__u32)opts[p + 4] << 8) | opts[p + 5];
			return 1;
		}
		if (len < 2)
			return 0;
		next = p + len;
	}
	return 0;
}

static __always_inline void timewait_segment(const struct sk_buff *skb, const struct sock *sk)
{
	if (sk->__sk_common.skc_state != TCP_TIME_WAIT)
		return;
	const struct tcp_timewait_sock *tw = (const void *)sk;
	if (BPF_CORE_READ(tw, tw_sk.tw_substate) != TCP_TIME_WAIT)
		return;
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	if (th == (__u16)~0U)
		return;
	struct tcphdr tcp;
	if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th))
		return;
	int what;
	if (tcp.rst) {
		int ended = BPF_CORE_READ(sk, __sk_common.skc_nulls_node.pprev) == NULL;
		what = ended ? TW_TWS_RST_ENDED : TW_TWS_RST_KEPT;
	} else if (tcp.syn && !tcp.ack) {
		__u32 last = BPF_CORE_READ(tw, tw_last_oow_ack_time);
		/* tcp_jiffies32 when the ACK left: this jiffy, or the last one if it ticked since. */
		int acked = last && (__u32)bpf_jiffies64() - last <= 1;
		what = acked ? TW_TWS_SYN_ANSWERED : TW_TWS_SYN_UNANSWERED;
	} else {
		return;
	}
	struct tw_tuple k;
	if (!tuple_of_sk(sk, &k) || !filter_pass(k.netns, k.lport, k.rport))
		return;
	struct event *e = reserve(TW_EV_TIMEWAIT);
	if (!e)
		return;
	drop_record_fill(e, &k, &(struct troubled){ .cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter) });
	e->state = TCP_TIME_WAIT;
	e->old_state = TCP_TIME_WAIT;
	e->packets_out = bpf_ntohl(tcp.seq);
	e->retrans_out = BPF_CORE_READ(sk, __sk_common.skc_tw_rcv_nxt);
	if (BPF_CORE_READ(sk, __sk_common.skc_net.net, ipv4.sysctl_tcp_rfc1337))
		what |= TW_TWS_F_RFC1337;
	if (BPF_CORE_READ(tw, tw_ts_recent_stamp)) {
		what |= TW_TWS_F_TW_TS;
		e->total_retrans = BPF_CORE_READ(tw, tw_ts_recent);
	}
	__u32 tsval = 0;
	if (segment_tsval(head + th + sizeof(tcp), tcp.doff * 4 - (int)sizeof(tcp), &tsval)) {
		what |= TW_TWS_F_SEG_TS;
		e->bytes_in_flight = tsval;
	}
	/* The timer keeps its expiry when it is cancelled: what an RST cut short. */
	long left = (long)(BPF_CORE_READ(tw, tw_sk.tw_timer.expires) - bpf_jiffies64());
	if (left > 0 && tw_cfg.hz)
		e->rto_ms = (__u32)((__u64)left * 1000 / tw_cfg.hz);
	e->detail = what;
	submit(e);
}

#endif /* TW_TIMEWAIT_H */
