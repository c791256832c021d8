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

/*
 * A 64-bit division is tens of cycles, and a record from fill_tp makes
 * five of them (a tenth of tw_destroy_sock's run with --all). tw_cfg is
 * constant at load: the verifier keeps the one branch of the running
 * kernel's HZ, so the usual values multiply.
 */
static __always_inline __u32 jiffies_to_ms(__u64 j)
{
	if (tw_cfg.hz == 250)
		return (__u32)(j * 4);
	if (tw_cfg.hz == 1000)
		return (__u32)j;
	if (tw_cfg.hz == 100)
		return (__u32)(j * 10);
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

/*
 * fill_sock.h is the one place each field is filled from a socket; these
 * two include it with their own way to read (TW_RD for a field,
 * TW_RD_BITFIELD for a bitfield, TW_RD_ADDRS for the addresses,
 * tw_cgroup_id for the cgroup), so a new field is added once and read the
 * right way by both.
 */
static __always_inline void fill_tp(struct event *e, const struct tcp_sock *tp)
{
	const struct inet_connection_sock *icsk = &tp->inet_conn;
	const struct sock *sk = &icsk->icsk_inet.sk;
	const struct net *net = sk->__sk_common.skc_net.net;
#define TW_RD(p, field) ((p)->field)
#define TW_RD_BITFIELD(p, field) BPF_CORE_READ_BITFIELD(p, field)
#define TW_RD_ADDRS(e, sk)                                                                                 \
	do {                                                                                               \
		if ((e)->family == AF_INET6) {                                                             \
			for (int i = 0; i < 4; i++) {                                                      \
				((__u32 *)(e)->saddr)[i] = (sk)->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i]; \
				((__u32 *)(e)->daddr)[i] = (sk)->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];     \
			}                                                                                  \
		} else {                                                                                   \
			*(__u32 *)(e)->saddr = (sk)->__sk_common.skc_rcv_saddr;                            \
			*(__u32 *)(e)->daddr = (sk)->__sk_common.skc_daddr;                                \
		}                                                                                          \
	} while (0)
#define tw_cgroup_id sk_cgroup_id
#include "fill_sock.h"
#undef TW_RD
#undef TW_RD_BITFIELD
#undef TW_RD_ADDRS
#undef tw_cgroup_id
}

/* The timer programs' socket: every read a probe read; the cookie too,
 * which the tracepoint programs take from bpf_get_socket_cookie(). */
static __always_inline void fill_probed(struct event *e, const struct sock *sk)
{
	const struct tcp_sock *tp = (const void *)sk;
	const struct inet_connection_sock *icsk = (const void *)sk;
	const struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);

	e->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
#define TW_RD(p, field) BPF_CORE_READ(p, field)
#define TW_RD_BITFIELD(p, field) BPF_CORE_READ_BITFIELD_PROBED(p, field)
#define TW_RD_ADDRS(e, sk)                                                                        \
	do {                                                                                      \
		if ((e)->family == AF_INET6) {                                                    \
			BPF_CORE_READ_INTO((struct in6_addr *)(e)->saddr, sk, __sk_common.skc_v6_rcv_saddr); \
			BPF_CORE_READ_INTO((struct in6_addr *)(e)->daddr, sk, __sk_common.skc_v6_daddr);     \
		} else {                                                                          \
			BPF_CORE_READ_INTO((__u32 *)(e)->saddr, sk, __sk_common.skc_rcv_saddr);   \
			BPF_CORE_READ_INTO((__u32 *)(e)->daddr, sk, __sk_common.skc_daddr);       \
		}                                                                                 \
	} while (0)
#define tw_cgroup_id sk_cgroup_id_probed
#include "fill_sock.h"
#undef TW_RD
#undef TW_RD_BITFIELD
#undef TW_RD_ADDRS
#undef tw_cgroup_id
}

static __always_inline void fill_owner(struct event *e, const struct sock_info *info)
{
	if (!info)
		return;
	e->first_seen_ns = info->first_seen_ns;
	e->pid = info->pid;
	e->owner_source = info->owner_source;
	__builtin_memcpy(e->comm, info->comm, sizeof(e->comm));
	__builtin_memcpy(e->thread, info->thread, sizeof(e->thread));
	if (info->flags & TW_SK_EXITING) {
		e->flags |= TW_F_OWNER_EXITING;
		e->exit_code = info->exit_code;
	}
	if (info->flags & TW_SK_CLOSE_WAIT)
		e->flags |= TW_F_CLOSE_WAIT_STUCK;
}

#endif /* TW_FILL_H */
