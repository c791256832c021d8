//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * `tcpwatch exposure`: a BPF TCP socket iterator (iter/tcp, 5.9+) that
 * writes one struct tw_sock_row (exposure.h) per socket of the namespace
 * the iterator was opened in. Unlike sock_diag, it reads each socket's own
 * keepalive settings (TCP_KEEPIDLE/KEEPINTVL/KEEPCNT, 0 meaning the
 * namespace's sysctl), TCP_USER_TIMEOUT and RTO bounds: what decides when
 * its kernel would notice a silent peer. It sends nothing and runs only
 * when user space reads it. It changes nothing either, except in watch
 * mode (close_wait_after_ns set): there it notes in tcpwatch.bpf.c's
 * socket storage when a scan first found a socket in CLOSE_WAIT, and
 * marks one still there close_wait_after_ns later notable, so that the
 * kernel half sends that socket's end (and only that socket's:
 * close_wait_stuck costs nothing for a connection its owner closes).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "exposure.h"
#include "sockstore.h"
#include "counters.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET6 10

/* Unused except to make bpf2go emit the Go types. */
const struct tw_sock_row *unused_row __attribute__((unused));
const enum tw_row_flag *unused_row_flag __attribute__((unused));

/*
 * Set by the loader: skip TIME_WAIT and request sockets (no tcp_sock, no
 * settings), for watch mode's periodic counts, where a busy host's tens
 * of thousands of TIME_WAIT sockets would only cost memory.
 */
const volatile __u8 connections_only = 0;

/*
 * Set by watch mode's loader, with sock_infos replaced by the kernel
 * half's: how long a socket may stay in CLOSE_WAIT, counted from the first
 * scan that found it there, before it is marked. 0: never look (tcpwatch
 * exposure, which must change nothing).
 */
const volatile __u64 close_wait_after_ns = 0;

/*
 * A socket in CLOSE_WAIT: when a scan first saw it there, and once that
 * is close_wait_after_ns ago, the mark that makes the kernel half tell
 * its end (TW_SK_NOTABLE) and the row's flag that makes user space tell
 * it stuck. The socket has no earlier timestamp of its peer's FIN: a
 * FIN without data does not move icsk_ack.lrcvtime, and rcv_tstamp
 * moves with every ACK the peer sends afterwards.
 */
static __always_inline void close_wait_scan(struct tcp_sock *tp, struct tw_sock_row *r)
{
	struct sock_info *info = bpf_sk_storage_get(&sock_infos, tp, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!info) {
		count(TW_CNT_NO_STORAGE); /* no memory: the socket cannot be marked, its stuck end goes untold */
		return;
	}
	__u64 now = bpf_ktime_get_ns();
	if (!info->close_wait_seen_ns)
		info->close_wait_seen_ns = now;
	__u64 held = now - info->close_wait_seen_ns;
	r->close_wait_ms = held / 1000000;
	if (held >= close_wait_after_ns) {
		info->flags |= TW_SK_NOTABLE | TW_SK_CLOSE_WAIT;
		r->flags |= TW_ROW_CLOSE_WAIT_STUCK;
	}
}

/*
 * Before 6.x the range was two ints under a seqlock; later one u32 (lo | hi << 16).
 * Each layout is a flavour: a field relocation checks the member's type, so
 * asking the size of an int[2] range through the u32 layout fails to relocate
 * (and the poisoned instruction rejected the whole program on 6.1).
 */
struct local_ports___pair {
	int range[2];
} __attribute__((preserve_access_index));

struct local_ports___packed {
	__u32 range;
} __attribute__((preserve_access_index));

static __always_inline void local_port_range(struct tw_sock_row *r, const struct net *net)
{
	const void *ports = &net->ipv4.ip_local_ports;
	if (bpf_core_field_exists(struct local_ports___packed, range)) {
		__u32 range = BPF_CORE_READ((const struct local_ports___packed *)ports, range);
		r->net_local_port_lo = range & 0xffff;
		r->net_local_port_hi = range >> 16;
	} else if (bpf_core_field_exists(struct local_ports___pair, range)) {
		const struct local_ports___pair *p = ports;
		r->net_local_port_lo = BPF_CORE_READ(p, range[0]);
		r->net_local_port_hi = BPF_CORE_READ(p, range[1]);
	}
}

SEC("iter/tcp")
int tw_exposure(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp && connections_only)
		return 0;
	struct tw_sock_row r = {};
	const struct net *net = skc->skc_net.net;

	r.family = skc->skc_family;
	r.state = skc->skc_state;
	r.uid = ctx->uid;
	r.netns = net->ns.inum;
	r.sport = skc->skc_num;
	r.dport = bpf_ntohs(skc->skc_dport);
	if (r.family == AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr *)r.saddr, skc, skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)r.daddr, skc, skc_v6_daddr);
	} else {
		*(__u32 *)r.saddr = skc->skc_rcv_saddr;
		*(__u32 *)r.daddr = skc->skc_daddr;
	}
	/* The cookie ss -e and tcpwatch's records show (made now if nobody asked yet). */
	r.cookie = bpf_get_socket_cookie(skc);
	r.net_keepalive_time = net->ipv4.sysctl_tcp_keepalive_time;
	r.net_keepalive_intvl = net->ipv4.sysctl_tcp_keepalive_intvl;
	r.net_keepalive_probes = net->ipv4.sysctl_tcp_keepalive_probes;
	r.net_retries2 = net->ipv4.sysctl_tcp_retries2;
	r.net_orphan_retries = net->ipv4.sysctl_tcp_orphan_retries;
	r.net_syn_retries = net->ipv4.sysctl_tcp_syn_retries;
	r.net_tw_reuse = net->ipv4.sysctl_tcp_tw_reuse;
	if (bpf_core_field_exists(struct netns_ipv4, sysctl_tcp_rto_max_ms)) {
		r.net_rto_max_ms = net->ipv4.sysctl_tcp_rto_max_ms;
		r.flags |= TW_ROW_SYS_RTO_MAX;
	}
	r.net_fin_timeout = net->ipv4.sysctl_tcp_fin_timeout;
	local_port_range(&r, net);

	if (tp) {
		const struct inet_connection_sock *icsk = &tp->inet_conn;
		const struct sock *sk = &icsk->icsk_inet.sk;
		__u32 now = (__u32)bpf_jiffies64();

		r.flags |= TW_ROW_FULL;
		unsigned long skflags = sk->__sk_common.skc_flags;
		if ((skflags >> bpf_core_enum_value(enum sock_flags, SOCK_KEEPOPEN)) & 1)
			r.flags |= TW_ROW_KEEPALIVE;
		if ((skflags >> bpf_core_enum_value(enum sock_flags, SOCK_DEAD)) & 1)
			r.flags |= TW_ROW_ORPHAN;
		struct socket *so = sk->sk_socket;
		if (so)
			r.inode = BPF_CORE_READ((struct socket_alloc *)so, vfs_inode.i_ino);
		if (bpf_core_field_exists(struct sock, sk_cgrp_data) &&
		    bpf_core_field_exists(struct sock_cgroup_data, cgroup)) {
			const struct cgroup *cgrp = sk->sk_cgrp_data.cgroup;
			if (cgrp)
				r.cgroup_id = BPF_CORE_READ(cgrp, kn, id);
		}
		r.ca_state = BPF_CORE_READ_BITFIELD(icsk, icsk_ca_state);
		r.retransmits = icsk->icsk_retransmits;
		r.backoff = icsk->icsk_backoff;
		r.probes_out = icsk->icsk_probes_out;
		r.sk_syn_retries = icsk->icsk_syn_retries;
		r.user_timeout_ms = icsk->icsk_user_timeout;
		r.rto = icsk->icsk_rto;
		if (bpf_core_field_exists(struct inet_connection_sock, icsk_rto_min)) {
			r.rto_min = icsk->icsk_rto_min;
			r.flags |= TW_ROW_RTO_MIN;
		}
		if (bpf_core_field_exists(struct inet_connection_sock, icsk_rto_max)) {
			r.rto_max = icsk->icsk_rto_max;
			r.flags |= TW_ROW_RTO_MAX;
		}
		r.sk_keepalive_time = tp->keepalive_time;
		r.sk_keepalive_intvl = tp->keepalive_intvl;
		r.sk_keepalive_probes = tp->keepalive_probes;
		r.linger2 = tp->linger2;
		r.srtt_us = tp->srtt_us >> 3;
		r.packets_out = tp->packets_out;
		r.unacked_bytes = tp->snd_nxt - tp->snd_una;
		r.unsent_bytes = tp->write_seq - tp->snd_nxt;
		r.unread_bytes = tp->rcv_nxt - tp->copied_seq;
		/* keepalive_time_elapsed(): the later of the last data and the last ACK received. */
		__u32 lrcv = icsk->icsk_ack.lrcvtime, ack = tp->rcv_tstamp;
		__u32 a = now - lrcv, b = now - ack;
		r.idle = a < b ? a : b;
		r.since_send = now - tp->lsndtime;
		r.since_ack = b;
		if (close_wait_after_ns && r.state == TCP_CLOSE_WAIT)
			close_wait_scan(tp, &r);
	}
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}
