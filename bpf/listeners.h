/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Listeners whose clients do not finish their handshake: the SYN-ACK
 * retransmissions of tcp:tcp_retransmit_synack, counted per listener.
 *
 * The tracepoint fires only when a request socket's SYN-ACK is sent again
 * (reqsk_timer_handler, or a client's repeated SYN in tcp_check_req): on
 * the failure path, never for a handshake that completes at the first
 * try. Nothing is sent through the ring: the counters wait in a map that
 * user space reads with the listeners' accept queues (once a second,
 * sock_diag), so a SYN flood costs one hash update per retransmission and
 * no record, and nothing is lost between two readings.
 *
 * A client is a request socket seen for the first time (req_seen): not
 * req->num_retrans, which 6.1 through 6.18 increment after the trace and
 * a later change increments before the send. inet_rsk(req)->acked, read
 * then, says the client did complete the handshake
 * and its ACK found the accept queue full (tcp_check_req keeps the request
 * socket and the timer resends the SYN-ACK until the queue has room or
 * tcp_synack_retries runs out): those clients wait for the application,
 * the others never answered.
 */
#ifndef TW_LISTENERS_H
#define TW_LISTENERS_H

#include "config.h"
#include "maps.h"
#include "filter.h"

/* A listener as the tracker keys it: its namespace and local port. */
struct tw_listen_key {
	__u32 netns;
	__u16 port; /* host byte order */
	__u16 family;
};

struct tw_synack {
	__u64 retransmits;   /* SYN-ACKs retransmitted */
	__u64 clients;       /* request sockets retransmitted to, never acked: the client never answered */
	__u64 acked_clients; /* ... acked: the client answered, its ACK found the accept queue full */
	__u64 last_ns;       /* bpf_ktime_get_ns() of the last retransmission */
	__u32 syn_queue;     /* icsk_accept_queue.qlen (request sockets) at the last retransmission */
	__u32 syn_queue_max; /* the largest qlen seen at a retransmission */
	__u32 accept_queue;  /* sk_ack_backlog at the last retransmission */
	__u32 accept_limit;  /* sk_max_ack_backlog */
};

/*
 * SYN-ACK retransmissions per listener. Written by tw_synack_retransmit;
 * read and never deleted by user space (tracer.SynackRetransmits): the
 * counters only grow, user space takes differences. Deleted by
 * tw_set_state when a listener closes (LISTEN -> CLOSE), so listeners
 * that closed do not pin memory. A plain hash, not an LRU: an LRU would
 * push out a live listener's counters without a word once 4096 listeners
 * had retransmitted (they would start again from 0); a full map refuses
 * the insert, counted (TW_CNT_SYNACK_FULL).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 12);
	__type(key, struct tw_listen_key);
	__type(value, struct tw_synack);
} synack_listeners SEC(".maps");

/*
 * The request sockets already counted as clients: keyed by address and
 * the ISN this host chose for it (random per request socket), so an
 * address reused by a later request socket is a new client. Written and
 * read by tw_synack_retransmit only; an LRU: a request socket lives at
 * most tcp_synack_retries timeouts (about 63 s), and one evicted while it
 * still retransmits (more than 16384 in flight) is counted again.
 */
struct tw_req_key {
	__u64 req;
	__u32 isn;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, struct tw_req_key);
	__type(value, __u8);
} req_seen SEC(".maps");

static __always_inline int handle_synack_retransmit(const struct sock *sk, const struct request_sock *req)
{
	if (!sk || !req)
		return 0;
	struct tw_listen_key k = {
		.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
		.port = BPF_CORE_READ(sk, __sk_common.skc_num),
		.family = BPF_CORE_READ(sk, __sk_common.skc_family),
	};
	if (!filter_pass(k.netns, k.port, 0))
		return 0;
	struct tw_synack *s = bpf_map_lookup_elem(&synack_listeners, &k);
	if (!s) {
		struct tw_synack fresh = {};
		long err = bpf_map_update_elem(&synack_listeners, &k, &fresh, BPF_NOEXIST);
		if (err && err != -EEXIST) { /* EEXIST: inserted on another CPU meanwhile */
			count(TW_CNT_SYNACK_FULL);
			return 0;
		}
		s = bpf_map_lookup_elem(&synack_listeners, &k);
		if (!s)
			return 0; /* its listener closed meanwhile */
	}
	const struct inet_connection_sock *icsk = (const struct inet_connection_sock *)sk;
	__u32 qlen = BPF_CORE_READ(icsk, icsk_accept_queue.qlen.counter);
	__sync_fetch_and_add(&s->retransmits, 1);
	struct tw_req_key rk = {
		.req = (__u64)req,
		.isn = BPF_CORE_READ((const struct tcp_request_sock *)req, snt_isn),
	};
	__u8 one = 1;
	if (bpf_map_update_elem(&req_seen, &rk, &one, BPF_NOEXIST) == 0) {
		const struct inet_request_sock *ireq = (const struct inet_request_sock *)req;
		if (BPF_CORE_READ_BITFIELD_PROBED(ireq, acked))
			__sync_fetch_and_add(&s->acked_clients, 1);
		else
			__sync_fetch_and_add(&s->clients, 1);
	}
	s->last_ns = bpf_ktime_get_ns();
	s->syn_queue = qlen;
	if (qlen > s->syn_queue_max)
		s->syn_queue_max = qlen;
	s->accept_queue = BPF_CORE_READ(sk, sk_ack_backlog);
	s->accept_limit = BPF_CORE_READ(sk, sk_max_ack_backlog);
	return 0;
}

/*
 * A listener closes (LISTEN -> CLOSE): its counters go. inet_put_port()
 * has zeroed skc_num by the tracepoint: inet_sport stays. Listeners that
 * share a port (SO_REUSEPORT) share the entry: the first to close takes
 * it, and the others' counters start again (user space sees them shrink
 * and takes the next reading as its baseline).
 */
static __always_inline void synack_forget(const struct sock *sk)
{
	struct tw_listen_key k = {
		.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
		.port = BPF_CORE_READ(sk, __sk_common.skc_num),
		.family = BPF_CORE_READ(sk, __sk_common.skc_family),
	};
	if (!k.port)
		k.port = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	bpf_map_delete_elem(&synack_listeners, &k);
}

#endif /* TW_LISTENERS_H */
