/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Where a troubled connection's packets die: skb:kfree_skb, joined to the
 * connections in trouble (maps.h, troubled).
 *
 * kfree_skb fires only on the drop path (a normal free is consume_skb),
 * but for every dropped packet of every protocol: a packet that is not
 * TCP over IP costs a few loads, a TCP one two hash lookups, and only a
 * packet of a troubled connection reaches the ring. The packet's own
 * headers name the connection, in both directions: an outgoing packet
 * (source = the local side) or an incoming one (the 4-tuple reversed),
 * whether or not the kernel attached a socket to it (incoming packets
 * dropped before the socket lookup, a netfilter INPUT drop, have none;
 * the receiving socket kfree_skb gained in 6.11 is not needed).
 *
 * Drops of one kind (reason, direction, hook) closer than TW_DROP_FOLD_NS
 * are folded into one record's `drops`; the folded tail of a burst goes
 * out with the connection's next drop or at its next timer expiry, so no
 * drop goes uncounted.
 */
#ifndef TW_DROPS_H
#define TW_DROPS_H

#include "maps.h"
#include "emit.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* ::ffff:a.b.c.d */
static __always_inline int v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

/*
 * A dual-stack socket talking to an IPv4 peer (a server on [::] that
 * accepted an IPv4 client): its packets are IPv4, so is its key.
 */
static __always_inline void tuple_unmap_v4(struct tw_tuple *k)
{
	if (v4_mapped(k->laddr) && v4_mapped(k->raddr)) {
		k->family = AF_INET;
		__builtin_memcpy(k->laddr, k->laddr + 12, 4);
		__builtin_memcpy(k->raddr, k->raddr + 12, 4);
		__builtin_memset(k->laddr + 4, 0, 12);
		__builtin_memset(k->raddr + 4, 0, 12);
	}
}

/*
 * The same from a trusted socket's tcp_sock, by direct loads: a probe
 * read is a helper call each, and a socket's move to CLOSE and its
 * destroy look for its troubled entry whenever any connection on the
 * host is in trouble (troubled_of).
 */
static __always_inline int tuple_of_tp(const struct tcp_sock *tp, struct tw_tuple *k)
{
	const struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	__builtin_memset(k, 0, sizeof(*k));
	k->family = sk->__sk_common.skc_family;
	k->lport = tp_sport(tp);
	k->rport = bpf_ntohs(sk->__sk_common.skc_dport);
	k->netns = tp_netns(tp);
	if (k->family == AF_INET6) {
		for (int i = 0; i < 4; i++) {
			((__u32 *)k->laddr)[i] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			((__u32 *)k->raddr)[i] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];
		}
		tuple_unmap_v4(k);
	} else if (k->family == AF_INET) {
		*(__u32 *)k->laddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)k->raddr = sk->__sk_common.skc_daddr;
	} else {
		return 0;
	}
	return k->lport && k->rport;
}

/* The tuple of a socket, local side first. Probe reads: works on a trusted socket and a timer's. */
static __always_inline int tuple_of_sk(const struct sock *sk, struct tw_tuple *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	k->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!k->lport)
		k->lport = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	k->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	k->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (k->family == AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr *)k->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)k->raddr, sk, __sk_common.skc_v6_daddr);
		tuple_unmap_v4(k);
	} else if (k->family == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)k->laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)k->raddr, sk, __sk_common.skc_daddr);
	} else {
		return 0;
	}
	return k->lport && k->rport;
}

static __always_inline void drop_record_fill(struct event *e, const struct tw_tuple *k, const struct troubled *t)
{
	e->cookie = t->cookie;
	e->netns = k->netns;
	e->family = k->family;
	e->sport = k->lport;
	e->dport = k->rport;
	__builtin_memcpy(e->saddr, k->laddr, 16);
	__builtin_memcpy(e->daddr, k->raddr, 16);
}

static __always_inline struct trouble_gate *gate(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&trouble_gate, &zero);
}

static __always_inline int port_marked(const struct trouble_gate *g, __u16 port)
{
	return (g->ports[(port >> 6) & (TW_PORT_WORDS - 1)] >> (port & 63)) & 1;
}

/* Sends the drops folded into t since its last record, if any. */
static __always_inline void flush_folded(const struct tw_tuple *k, struct troubled *t)
{
	if (!t->folded || !filter_pass(k->netns, k->lport, k->rport))
		return;
	struct event *e = reserve(TW_EV_DROP);
	if (!e)
		return;
	drop_record_fill(e, k, t);
	e->detail = t->reason;
	e->flags = t->flags;
	e->nf_hook = t->nf_hook;
	e->drops = t->folded;
	t->folded = 0;
	submit(e);
}

/*
 * The socket is in trouble (an RTO or probe expiry, an RTO or SYN
 * retransmission, a keepalive probe): its drops are wanted from now on.
 */
static __always_inline void mark_troubled(const struct sock *sk)
{
	struct tw_tuple k;
	if (!tuple_of_sk(sk, &k))
		return;
	/* A connection the user's filters exclude is none of our business. */
	if (!filter_pass(k.netns, k.lport, k.rport))
		return;
	__u64 now = bpf_ktime_get_ns();
	struct trouble_gate *g = gate();
	if (g) {
		g->last_mark_ns = now;
		__sync_fetch_and_or(&g->ports[(k.lport >> 6) & (TW_PORT_WORDS - 1)], 1ULL << (k.lport & 63));
	}
	__u64 cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	struct troubled *t = bpf_map_lookup_elem(&troubled, &k);
	if (t && t->cookie == cookie) {
		t->marked_ns = now;
		flush_folded(&k, t);
		return;
	}
	if (t) {
		/* An earlier socket's entry at this 4-tuple: this one's now, in place (no insert to fail). */
		flush_folded(&k, t);
		t->folded = 0;
		t->cookie = cookie;
		t->marked_ns = now;
		t->last_emit_ns = 0;
		t->reason = 0;
		t->flags = 0;
		t->nf_hook = 0;
		return;
	}
	struct troubled fresh = { .cookie = cookie, .marked_ns = now };
	long err = bpf_map_update_elem(&troubled, &k, &fresh, BPF_NOEXIST);
	if (!err) {
		if (g)
			__sync_fetch_and_add(&g->troubled_live, 1);
	} else if (err != -EEXIST) { /* EEXIST: marked on another CPU meanwhile */
		count(TW_CNT_TROUBLED_FULL); /* E2BIG: more connections in trouble than the map holds (or EBUSY: its bucket locked on this CPU) */
	}
}

/* Deletes k's entry, keeping trouble_gate's count of them. */
static __always_inline void troubled_delete(struct tw_tuple *k)
{
	if (bpf_map_delete_elem(&troubled, k))
		return; /* deleted on another CPU meanwhile */
	struct trouble_gate *g = gate();
	if (g)
		__sync_fetch_and_add(&g->troubled_live, -1);
}

/* Whether any connection is marked: no lookup at a socket's end otherwise. */
static __always_inline int troubled_any(const struct trouble_gate *g)
{
	return g && READ_ONCE(g->troubled_live) != 0;
}

/* The trouble is over (Loss -> Open, or the socket is gone). */
static __always_inline void unmark_troubled(const struct sock *sk)
{
	struct tw_tuple k;
	if (!troubled_any(gate()) || !tuple_of_sk(sk, &k))
		return;
	struct troubled *t = bpf_map_lookup_elem(&troubled, &k);
	if (!t)
		return;
	flush_folded(&k, t);
	troubled_delete(&k);
}

/*
 * The socket's own troubled entry (its cookie's), with its key in k; NULL
 * when it has none. The count of entries and the port bit keep this to
 * two loads for a healthy socket. sk is a tracepoint's (trusted) full
 * TCP socket: direct loads.
 */
static __always_inline struct troubled *troubled_of(const struct sock *sk, struct trouble_gate *g, struct tw_tuple *k)
{
	if (!troubled_any(g))
		return NULL;
	const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp || !port_marked(g, tp_sport(tp)) || !tuple_of_tp(tp, k))
		return NULL;
	struct troubled *t = bpf_map_lookup_elem(&troubled, k);
	if (!t || t->cookie != sk->__sk_common.skc_cookie.counter)
		return NULL;
	return t;
}

/*
 * A socket's move to CLOSE: its troubled entry goes now, while it still
 * has its 4-tuple (tcp_disconnect, which SO_LINGER 0's close and
 * connect(AF_UNSPEC) run, clears it right after, long before the
 * destroy), with the drops folded into it. Returns 1 when it was marked
 * and anything was marked within TW_TROUBLE_TTL_NS: its end must then
 * reach user space even if nothing made it notable (the timer programs
 * cannot create its storage: a window-probe episode ended by close()
 * would otherwise end unseen).
 */
static __always_inline int troubled_at_close(const struct sock *sk)
{
	struct trouble_gate *g = gate();
	struct tw_tuple k;
	struct troubled *t = troubled_of(sk, g, &k);
	if (!t)
		return 0;
	flush_folded(&k, t);
	troubled_delete(&k);
	return g->last_mark_ns && bpf_ktime_get_ns() - g->last_mark_ns <= TW_TROUBLE_TTL_NS;
}

/*
 * A socket's destroy: an entry a race left (a timer's mark on one CPU just
 * after the move to CLOSE on another: the timer programs run before the
 * handler takes the socket's lock) goes now, while the socket has its
 * 4-tuple (all but a disconnected one). troubled is no LRU: nothing else
 * would delete it but a drop of that 4-tuple past TW_TROUBLE_TTL_NS.
 */
static __always_inline void troubled_forget(const struct sock *sk)
{
	struct tw_tuple k;
	if (troubled_of(sk, gate(), &k))
		troubled_delete(&k);
}

/* NETFILTER_DROP's hook, from the packet's state (see enum tw_nf_hook). */
static __always_inline __u8 nf_hook_of(const struct sk_buff *skb, int inbound)
{
	if (inbound)
		return skb->_skb_refdst ? TW_NF_INPUT : TW_NF_PREROUTING;
	return skb->dev ? TW_NF_POSTROUTING : TW_NF_OUTPUT;
}

static __always_inline int is_netfilter_drop(int reason)
{
	return bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NETFILTER_DROP) &&
	       reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NETFILTER_DROP);
}

/*
 * A drop of troubled connection k's packet: one record, or folded into
 * the next one of its kind (see TW_DROP_FOLD_NS).
 */
static __always_inline int keep_drop(struct tw_tuple *k, struct troubled *t, int reason, __u16 flags, __u8 hook)
{
	__u64 now = bpf_ktime_get_ns();
	if (now - t->marked_ns > TW_TROUBLE_TTL_NS) {
		troubled_delete(k);
		return 0;
	}
	count(TW_CNT_DROPS_KEPT);
	int same = t->reason == reason && t->flags == flags && t->nf_hook == hook;
	if (same && now - t->last_emit_ns < TW_DROP_FOLD_NS) {
		t->folded++;
		return 0;
	}
	if (!same)
		flush_folded(k, t);
	if (!filter_pass(k->netns, k->lport, k->rport))
		return 0;
	struct event *e = reserve(TW_EV_DROP);
	if (!e)
		return 0;
	drop_record_fill(e, k, t);
	e->detail = reason;
	e->flags = flags;
	e->nf_hook = hook;
	e->drops = 1 + (same ? t->folded : 0);
	t->folded = 0;
	t->reason = reason;
	t->flags = flags;
	t->nf_hook = hook;
	t->last_emit_ns = now;
	submit(e);
	return 0;
}

/*
 * A TCP segment dropped before it became an IP packet (no IP header yet,
 * no protocol: the route lookup of ip_queue_xmit failed, IP_OUTNOROUTES):
 * its socket names the connection.
 */
static __always_inline int drop_before_ip(const struct sk_buff *skb, const struct trouble_gate *g, int reason, __u64 location)
{
	const struct sock *sk = skb->sk;
	if (!sk)
		return 0;
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV || state == TCP_LISTEN)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	struct tw_tuple k;
	if (!tuple_of_sk(sk, &k) || !port_marked(g, k.lport))
		return 0;
	struct troubled *t = bpf_map_lookup_elem(&troubled, &k);
	if (!t)
		return 0;
	/*
	 * IPv6's failed route lookup (inet6_csk_xmit) frees the segment with
	 * plain kfree_skb: NOT_SPECIFIED. Its place says what happened.
	 */
	__u16 flags = 0;
	if (tw_cfg.v6_xmit_start && location >= tw_cfg.v6_xmit_start && location < tw_cfg.v6_xmit_end &&
	    bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		flags = TW_F_DROP_NO_ROUTE6;
	return keep_drop(&k, t, reason, flags, 0);
}

static __always_inline int handle_drop(const struct sk_buff *skb, int reason, __u64 location)
{
	/* Nothing in trouble lately: nothing to look for. */
	struct trouble_gate *g = gate();
	if (!g || !g->last_mark_ns || bpf_ktime_get_ns() - g->last_mark_ns > TW_TROUBLE_TTL_NS)
		return 0;
	__u16 proto = skb->protocol;
	unsigned char *head = skb->head;
	__u16 nh = skb->network_header, th = skb->transport_header;
	if ((proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6)) ||
	    nh == (__u16)~0U || th == (__u16)~0U || th <= nh)
		return drop_before_ip(skb, g, reason, location);
	count(TW_CNT_DROPS_SEEN);

	/* The ports first: most drops stop at the port prefilter. */
	__be16 ports[2];
	if (bpf_probe_read_kernel(ports, sizeof(ports), head + th))
		return 0;
	if (!port_marked(g, bpf_ntohs(ports[0])) && !port_marked(g, bpf_ntohs(ports[1])))
		return 0;

	/* The packet as if this host sent it: source = local. */
	struct tw_tuple k = {};
	__u8 first = 0;
	if (bpf_probe_read_kernel(&first, 1, head + nh))
		return 0;
	if ((first >> 4) == 4 && proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip4;
		if (bpf_probe_read_kernel(&ip4, sizeof(ip4), head + nh) || ip4.protocol != IPPROTO_TCP)
			return 0;
		k.family = AF_INET;
		__builtin_memcpy(k.laddr, &ip4.saddr, 4);
		__builtin_memcpy(k.raddr, &ip4.daddr, 4);
	} else if ((first >> 4) == 6 && proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) || ip6.nexthdr != IPPROTO_TCP)
			return 0;
		k.family = AF_INET6;
		__builtin_memcpy(k.laddr, &ip6.saddr, 16);
		__builtin_memcpy(k.raddr, &ip6.daddr, 16);
	} else {
		return 0;
	}
	k.lport = bpf_ntohs(ports[0]);
	k.rport = bpf_ntohs(ports[1]);
	/*
	 * Outgoing packets carry their socket, and keep it when they cross
	 * into another namespace (a veth into a bridge or the node's own
	 * stack): the key is the socket's namespace, and a device in another
	 * one says the drop happened there, not in the connection's host.
	 * Incoming packets dropped before the socket lookup have only their
	 * device.
	 */
	const struct sock *owner = skb->sk;
	__u32 sk_ns = owner ? BPF_CORE_READ(owner, __sk_common.skc_net.net, ns.inum) : 0;
	__u32 dev_ns = skb->dev ? BPF_CORE_READ(skb, dev, nd_net.net, ns.inum) : 0;
	k.netns = sk_ns ?: dev_ns;
	if (!k.netns)
		return 0;
	int elsewhere = sk_ns && dev_ns && sk_ns != dev_ns;

	int inbound = 0;
	struct troubled *t = bpf_map_lookup_elem(&troubled, &k);
	if (!t) {
		struct tw_tuple r = k;
		__builtin_memcpy(r.laddr, k.raddr, 16);
		__builtin_memcpy(r.raddr, k.laddr, 16);
		r.lport = k.rport;
		r.rport = k.lport;
		t = bpf_map_lookup_elem(&troubled, &r);
		if (!t)
			return 0;
		k = r;
		inbound = 1;
	}
	__u8 hook = 0;
	if (!elsewhere && is_netfilter_drop(reason))
		hook = nf_hook_of(skb, inbound);
	return keep_drop(&k, t, reason, (inbound ? TW_F_DROP_IN : 0) | (elsewhere ? TW_F_DROP_ELSEWHERE : 0), hook);
}

#endif /* TW_DROPS_H */
