/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Owners. `current` means something only in the owner's own syscalls (or
 * its exit): timer and softirq events run in whatever task is on the CPU.
 * So the owner is written at three moments only, each in task context:
 * connect (-> SYN_SENT), listen (-> LISTEN) and close (ESTABLISHED ->
 * FIN_WAIT1, CLOSE_WAIT -> LAST_ACK, or an active reset on close). Accepted
 * and pre-existing sockets have no owner here until they are closed: user
 * space names them from the listener's record or the socket inode.
 */
#ifndef TW_SOCKINFO_H
#define TW_SOCKINFO_H

#include "maps.h"

#define PF_EXITING 0x00000004

static __always_inline struct sock_info *sock_info_lookup(const struct sock *sk)
{
	return bpf_sk_storage_get(&sock_infos, (void *)sk, 0, 0);
}

static __always_inline struct sock_info *sock_info_create(const struct sock *sk)
{
	struct sock_info *info = bpf_sk_storage_get(&sock_infos, (void *)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (info && !info->first_seen_ns)
		info->first_seen_ns = bpf_ktime_get_ns();
	return info;
}

static __always_inline void owner_is_current(struct sock_info *info, __u32 tgid, __u8 source)
{
	info->pid = tgid;
	info->owner_source = source;
	bpf_get_current_comm(&info->comm, sizeof(info->comm));
}

/* connect() or listen(): the caller owns the socket. */
static __always_inline void set_owner(struct sock_info *info, __u8 source)
{
	if (info)
		owner_is_current(info, bpf_get_current_pid_tgid() >> 32, source);
}

/*
 * A close path: the closer becomes the owner, unless it is the process
 * that connected (the connect owner says more); an exiting closer is noted.
 */
static __always_inline void set_closer(struct sock_info *info)
{
	if (!info)
		return;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!(info->owner_source == TW_OWNER_CONNECT && info->pid == tgid))
		owner_is_current(info, tgid, TW_OWNER_CLOSE);
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->flags & PF_EXITING) {
		info->flags |= TW_SK_EXITING;
		info->exit_code = task->exit_code;
	}
}

/*
 * ESTABLISHED -> FIN_WAIT1 or CLOSE_WAIT -> LAST_ACK: close() or exit, in
 * the owner's task. A socket with storage (connect()ed, or notable) learns
 * its closer. One without (accepted, closed by a live process) is left
 * without: making storage costs about 1 us per connection (measured:
 * tw_set_state 380 -> 270 ns per run on loopback churn), and its owner is
 * the listener's, which user space knows from the LISTEN record. A closer
 * that is exiting is news (the process died): then storage is made.
 */
static __always_inline struct sock_info *closing(const struct sock *sk)
{
	struct sock_info *info = sock_info_lookup(sk);
	if (!info) {
		struct task_struct *task = bpf_get_current_task_btf();
		if (!(task->flags & PF_EXITING))
			return NULL;
		info = sock_info_create(sk);
	}
	set_closer(info);
	return info;
}

/*
 * The default mode sends only what can become a narrative: once a socket
 * is notable, everything about it is sent so its story is whole.
 */
static __always_inline int wanted(struct sock_info *info, int notable_now)
{
	if (info && notable_now)
		info->flags |= TW_SK_NOTABLE;
	if (tw_cfg.emit_all || notable_now)
		return 1;
	return info && (info->flags & TW_SK_NOTABLE);
}

#endif /* TW_SOCKINFO_H */
