/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Filling a record from a socket, two ways:
 *
 * fill_tp() takes the struct tcp_sock that bpf_skc_to_tcp_sock() returns
 * for a tracepoint's socket argument. Its fields, and those of the struct
 * net and struct socket it points to, are direct loads (CO-RE relocated;
 * the verifier turns loads through walked pointers into fault-tolerant
 * ones). The one probe read is the inode, which lives in struct
 * socket_alloc around the struct socket the verifier knows.
 *
 * fill_probed() takes the socket the timer programs derive from a
 * timer_list with container_of: a plain number to the verifier, not a
 * pointer helpers accept or that can be loaded from. Every field is a
 * BPF_CORE_READ (bpf_probe_read_kernel), so it reads less: what a timer
 * record needs.
 */
#ifndef TW_FILL_H
#define TW_FILL_H

#include "maps.h"

#define AF_INET 2
#define AF_INET6 10
#define TCP_RTO_MAX_MS 120000

static __always_inline __u32 jiffies_to_ms(__u64 j)
{
	return (__u32)(j * 1000 / (tw_cfg.hz ? tw_cfg.hz : 250));
}

static __always_inline int sock_flag_set(unsigned long flags, int bit)
{
	return (flags >> bit) & 1;
}

/* The local port; inet_put_port() zeroes skc_num before the CLOSE tracepoint, inet_sport stays. */
static __always_inline __u16 tp_sport(const struct tcp_sock *tp)
{
	__u16 port = tp->inet_conn.icsk_inet.sk.__sk_common.skc_num;
	return port ? port : bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
}

static __always_inline __u32 tp_netns(const struct tcp_sock *tp)
{
	return tp->inet_conn.icsk_inet.sk.__sk_common.skc_net.net->ns.inum;
}

/*
 * The cgroup v2 id of the socket: the cgroup of the task that created it,
 * kept in sk->sk_cgrp_data (cgroup_sk_alloc), so it holds in softirq and
 * timer context, where the current task is whoever was on the CPU. The id
 * is the cgroup directory's kernfs id, the inode number that `stat -c %i`
 * shows on cgroup v2 and that bpf_get_current_cgroup_id() would return.
 *
 * Since 5.15 sk_cgrp_data holds the cgroup pointer; before, a `val` that
 * is the pointer unless one of its two low bits is set (net_cls or
 * net_prio v1 took the space: then the kernel itself answers with the
 * root cgroup, id 1). Kernels without CONFIG_SOCK_CGROUP_DATA give 0.
 */
struct sock_cgroup_data___val {
	__u64 val;
} __attribute__((preserve_access_index));

struct sock___val {
	struct sock_cgroup_data___val sk_cgrp_data;
} __attribute__((preserve_access_index));

static __always_inline __u64 cgroup_kn_id(const struct cgroup *cgrp)
{
	if (!cgrp)
		return 0;
	/* kernfs_node.id is a u64 since 5.5 (a union of ino/generation before: left 0). */
	if (bpf_core_field_size(struct kernfs_node, id) != sizeof(__u64))
		return 0;
	return BPF_CORE_READ(cgrp, kn, id);
}

static __always_inline __u64 sk_cgroup_id_probed(const struct sock *sk)
{
	if (!bpf_core_field_exists(struct sock, sk_cgrp_data))
		return 0;
	if (bpf_core_field_exists(struct sock_cgroup_data, cgroup))
		return cgroup_kn_id(BPF_CORE_READ(sk, sk_cgrp_data.cgroup));
	if (bpf_core_field_exists(struct sock_cgroup_data___val, val)) {
		__u64 v = BPF_CORE_READ((const struct sock___val *)sk, sk_cgrp_data.val);
		if (v & 3)
			return 1; /* the kernel's sock_cgroup_ptr(): the root cgroup */
		return cgroup_kn_id((const struct cgroup *)v);
	}
	return 0;
}

/* The same from a trusted socket: direct loads where the layout allows them. */
static __always_inline __u64 sk_cgroup_id(const struct sock *sk)
{
	if (bpf_core_field_exists(struct sock, sk_cgrp_data) &&
	    bpf_core_field_exists(struct sock_cgroup_data, cgroup) &&
	    bpf_core_field_size(struct kernfs_node, id) == sizeof(__u64)) {
		const struct cgroup *cgrp = sk->sk_cgrp_data.cgroup;
		if (!cgrp)
			return 0;
		return cgrp->kn->id;
	}
	return sk_cgroup_id_probed(sk);
}

static __always_inline void fill_tp(struct event *e, const struct tcp_sock *tp)
{
	const struct inet_connection_sock *icsk = &tp->inet_conn;
	const struct sock *sk = &icsk->icsk_inet.sk;
	const struct sock_common *skc = &sk->__sk_common;
	const struct net *net = skc->skc_net.net;

	e->family = skc->skc_family;
	e->sport = tp_sport(tp);
	e->dport = bpf_ntohs(skc->skc_dport);
	e->netns = net->ns.inum;
	e->state = skc->skc_state;
	if (e->family == AF_INET6) {
		for (int i = 0; i < 4; i++) {
			((__u32 *)e->saddr)[i] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			((__u32 *)e->daddr)[i] = skc->skc_v6_daddr.in6_u.u6_addr32[i];
		}
	} else {
		*(__u32 *)e->saddr = skc->skc_rcv_saddr;
		*(__u32 *)e->daddr = skc->skc_daddr;
	}
	unsigned long flags = skc->skc_flags;
	e->keepalive_on = sock_flag_set(flags, bpf_core_enum_value(enum sock_flags, SOCK_KEEPOPEN));
	if (sock_flag_set(flags, bpf_core_enum_value(enum sock_flags, SOCK_DEAD)))
		e->flags |= TW_F_ORPHAN;
	struct socket *so = sk->sk_socket;
	if (so)
		e->inode = BPF_CORE_READ((struct socket_alloc *)so, vfs_inode.i_ino);
	e->cgroup_id = sk_cgroup_id(sk);

	e->ca_state = BPF_CORE_READ_BITFIELD(icsk, icsk_ca_state);
	e->retransmits = icsk->icsk_retransmits;
	e->backoff = icsk->icsk_backoff;
	e->probes_out = icsk->icsk_probes_out;
	e->rto_ms = jiffies_to_ms(icsk->icsk_rto);
	e->rto_max_ms = TCP_RTO_MAX_MS;
	if (bpf_core_field_exists(struct inet_connection_sock, icsk_rto_max))
		e->rto_max_ms = jiffies_to_ms(icsk->icsk_rto_max) ?: TCP_RTO_MAX_MS;
	e->user_timeout_ms = icsk->icsk_user_timeout;
	e->sk_err = sk->sk_err;
	e->sk_err_soft = sk->sk_err_soft;
	e->srtt_us = tp->srtt_us >> 3;
	e->packets_out = tp->packets_out;
	e->retrans_out = tp->retrans_out;
	e->bytes_in_flight = tp->snd_nxt - tp->snd_una;
	e->total_retrans = tp->total_retrans;
	e->snd_wnd = tp->snd_wnd;
	e->notsent_bytes = tp->write_seq - tp->snd_nxt;

	/* 0 in the socket means "the namespace's sysctl" (keepalive_*_when()). */
	__u32 ka_time = tp->keepalive_time ?: net->ipv4.sysctl_tcp_keepalive_time;
	__u32 ka_intvl = tp->keepalive_intvl ?: net->ipv4.sysctl_tcp_keepalive_intvl;
	e->keepalive_time_ms = jiffies_to_ms(ka_time);
	e->keepalive_intvl_ms = jiffies_to_ms(ka_intvl);
	e->keepalive_probes = tp->keepalive_probes ?: net->ipv4.sysctl_tcp_keepalive_probes;
	e->retries2 = net->ipv4.sysctl_tcp_retries2;
	e->syn_retries = icsk->icsk_syn_retries ?: net->ipv4.sysctl_tcp_syn_retries;
	e->orphan_retries = net->ipv4.sysctl_tcp_orphan_retries;
	if (bpf_core_field_exists(struct netns_ipv4, sysctl_tcp_syn_linear_timeouts))
		e->syn_linear_timeouts = net->ipv4.sysctl_tcp_syn_linear_timeouts;
	/* Nothing was ever acknowledged before the handshake completes. */
	__u32 rcv = tp->rcv_tstamp;
	if (rcv && e->state != TCP_SYN_SENT && e->state != TCP_LISTEN)
		e->ack_age_ms = jiffies_to_ms((__u32)bpf_jiffies64() - rcv);
}

/* The timer programs' socket: every read a probe read. */
static __always_inline void fill_probed(struct event *e, const struct sock *sk)
{
	const struct tcp_sock *tp = (const void *)sk;
	const struct inet_connection_sock *icsk = (const void *)sk;
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);

	e->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->netns = BPF_CORE_READ(net, ns.inum);
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr *)e->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)e->daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	}
	unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
	e->keepalive_on = sock_flag_set(flags, bpf_core_enum_value(enum sock_flags, SOCK_KEEPOPEN));
	if (sock_flag_set(flags, bpf_core_enum_value(enum sock_flags, SOCK_DEAD)))
		e->flags |= TW_F_ORPHAN;
	struct socket *so = BPF_CORE_READ(sk, sk_socket);
	if (so)
		e->inode = BPF_CORE_READ((struct socket_alloc *)so, vfs_inode.i_ino);
	e->cgroup_id = sk_cgroup_id_probed(sk);

	e->ca_state = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state);
	e->retransmits = BPF_CORE_READ(icsk, icsk_retransmits);
	e->backoff = BPF_CORE_READ(icsk, icsk_backoff);
	e->probes_out = BPF_CORE_READ(icsk, icsk_probes_out);
	e->rto_ms = jiffies_to_ms(BPF_CORE_READ(icsk, icsk_rto));
	e->rto_max_ms = TCP_RTO_MAX_MS;
	if (bpf_core_field_exists(struct inet_connection_sock, icsk_rto_max))
		e->rto_max_ms = jiffies_to_ms(BPF_CORE_READ(icsk, icsk_rto_max)) ?: TCP_RTO_MAX_MS;
	e->user_timeout_ms = BPF_CORE_READ(icsk, icsk_user_timeout);
	e->sk_err = BPF_CORE_READ(sk, sk_err);
	e->sk_err_soft = BPF_CORE_READ(sk, sk_err_soft);
	e->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	e->packets_out = BPF_CORE_READ(tp, packets_out);
	e->retrans_out = BPF_CORE_READ(tp, retrans_out);
	e->bytes_in_flight = BPF_CORE_READ(tp, snd_nxt) - BPF_CORE_READ(tp, snd_una);
	e->total_retrans = BPF_CORE_READ(tp, total_retrans);
	e->snd_wnd = BPF_CORE_READ(tp, snd_wnd);
	e->notsent_bytes = BPF_CORE_READ(tp, write_seq) - BPF_CORE_READ(tp, snd_nxt);

	__u32 ka_time = BPF_CORE_READ(tp, keepalive_time) ?: BPF_CORE_READ(net, ipv4.sysctl_tcp_keepalive_time);
	__u32 ka_intvl = BPF_CORE_READ(tp, keepalive_intvl) ?: BPF_CORE_READ(net, ipv4.sysctl_tcp_keepalive_intvl);
	e->keepalive_time_ms = jiffies_to_ms(ka_time);
	e->keepalive_intvl_ms = jiffies_to_ms(ka_intvl);
	e->keepalive_probes = BPF_CORE_READ(tp, keepalive_probes) ?: BPF_CORE_READ(net, ipv4.sysctl_tcp_keepalive_probes);
	e->retries2 = BPF_CORE_READ(net, ipv4.sysctl_tcp_retries2);
	e->syn_retries = BPF_CORE_READ(icsk, icsk_syn_retries) ?: BPF_CORE_READ(net, ipv4.sysctl_tcp_syn_retries);
	e->orphan_retries = BPF_CORE_READ(net, ipv4.sysctl_tcp_orphan_retries);
	if (bpf_core_field_exists(struct netns_ipv4, sysctl_tcp_syn_linear_timeouts))
		e->syn_linear_timeouts = BPF_CORE_READ(net, ipv4.sysctl_tcp_syn_linear_timeouts);
	__u32 rcv = BPF_CORE_READ(tp, rcv_tstamp);
	if (rcv && e->state != TCP_SYN_SENT && e->state != TCP_LISTEN)
		e->ack_age_ms = jiffies_to_ms((__u32)bpf_jiffies64() - rcv);
}

static __always_inline void fill_owner(struct event *e, const struct sock_info *info)
{
	if (!info)
		return;
	e->first_seen_ns = info->first_seen_ns;
	e->pid = info->pid;
	e->owner_source = info->owner_source;
	__builtin_memcpy(e->comm, info->comm, sizeof(e->comm));
	if (info->flags & TW_SK_EXITING) {
		e->flags |= TW_F_OWNER_EXITING;
		e->exit_code = info->exit_code;
	}
}

#endif /* TW_FILL_H */
