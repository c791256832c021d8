/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Owners. `current` means something only in the owner's own syscalls (or
 * its exit): timer and softirq events run in whatever task is on the CPU.
 * So the owner is written at three moments only, each in task context:
 * connect (-> SYN_SENT), listen (-> LISTEN) and close (ESTABLISHED ->
 * FIN_WAIT1, CLOSE_WAIT -> LAST_ACK, or an active reset on close). Accepted
 * and pre-existing sockets have no owner here until they are closed: user
 * space names them from the listener's record or the socket inode.
 *
 * The connect owner is not put in socket storage (maps.h, connect_owners):
 * it waits in a slot keyed by the cookie, and goes into the storage when
 * the socket becomes notable. A connected socket with no storage is, like
 * an accepted one, closed without its closer noted (unless the closer is
 * exiting): its later records name the connect owner.
 */
#ifndef TW_SOCKINFO_H
#define TW_SOCKINFO_H

#include "maps.h"

#define PF_EXITING 0x00000004

/*
 * Most sockets have no storage at all (it is made only for a notable one),
 * and the helper call that says so is a good part of a state change's cost
 * with --all (about 5 of the 10 runs a loopback connection makes look).
 * A socket with no storage of any map has sk_bpf_storage NULL: one load
 * of a line the tracepoint's caller has just touched. Storage being made
 * on another CPU at that moment is missed either way (the helper reads the
 * same pointer).
 */
static __always_inline struct sock_info *sock_info_lookup(const struct sock *sk)
{
	if (bpf_core_field_exists(struct sock, sk_bpf_storage) && !sk->sk_bpf_storage)
		return NULL;
	return bpf_sk_storage_get(&sock_infos, (void *)sk, 0, 0);
}

/*
 * A connect slot is written on one CPU and may be read on another while a
 * later socket's connect rewrites it, so its `cookie` says when the other
 * fields belong to it (maps.h). That takes ordering between CPUs, not only
 * the compiler's: on arm64, which `make release` ships, plain stores can
 * become visible to another CPU in any order and plain loads can be
 * satisfied out of order, so a compiler barrier alone (what this used)
 * would let a reader take a new socket's pid with the old one's cookie.
 * The BPF instruction set has no fence before 6.15 (load-acquire and
 * store-release came then; tcpwatch runs from 6.1), but its atomic
 * instructions with a result (xchg, cmpxchg, fetch-and-op, 5.12+) are
 * fully ordered, as the kernel's own atomic_xchg() and atomic_fetch_or():
 * the x86 JIT emits them with a lock prefix, arm64's as swpal/ldsetal (or
 * an ll/sc loop ending in dmb ish). So `cookie` is only ever written with
 * xchg and read with fetch_or(0): the writer's field stores cannot pass
 * either of its two exchanges, and the reader's field loads cannot move
 * before its first read of the cookie nor after its second. The seq_cst
 * builtins also keep the compiler from moving the fields across them.
 */
static __always_inline __u64 slot_cookie(struct connect_owner *c)
{
	return __atomic_fetch_or(&c->cookie, 0, __ATOMIC_SEQ_CST);
}

/*
 * An owner's name is its process's: the thread-group leader's comm. The
 * current task's comm is a thread's: at a process's exit its files are
 * closed by whichever thread exits last (redis-server's bio_aof_fsync),
 * and connect() may come from a worker thread with a name of its own.
 * That name is kept beside the process's as extra detail (thread): it is
 * at hand here, one helper call, and only at connect, listen and close.
 */
/*
 * Both names are read with direct loads of the task (two words each): the
 * helpers that copied them (bpf_get_current_comm, a probe read of the
 * leader's) were a tenth of a connect's run. The kernel keeps comm
 * NUL-padded (strscpy_pad), as the helper's copy was. comm and thread are
 * 8-byte aligned in every struct that holds them.
 */
static __always_inline void owner_names(__u8 *comm, __u8 *thread)
{
	struct task_struct *task = bpf_get_current_task_btf();
	const __u64 *t = (const __u64 *)task->comm;
	const __u64 *g = (const __u64 *)task->group_leader->comm;
	((__u64 *)thread)[0] = t[0];
	((__u64 *)thread)[1] = t[1];
	((__u64 *)comm)[0] = g[0];
	((__u64 *)comm)[1] = g[1];
}

static __always_inline struct connect_owner *connect_slot(__u64 cookie)
{
	__u32 slot = (__u32)cookie & (TW_CONNECT_SLOTS - 1);
	return bpf_map_lookup_elem(&connect_owners, &slot);
}

/*
 * connect(), default mode: the owner waits in its slot (a few ns, no
 * allocation). cookie: the socket's, made by the caller; now: its clock.
 */
static __always_inline void remember_connect(__u64 cookie, __u64 now)
{
	struct connect_owner *c = connect_slot(cookie);
	if (!c)
		return;
	__atomic_exchange_n(&c->cookie, 0, __ATOMIC_SEQ_CST); /* empty before any field changes */
	c->pid = bpf_get_current_pid_tgid() >> 32;
	c->ts_ns = now;
	owner_names(c->comm, c->thread);
	__atomic_exchange_n(&c->cookie, cookie, __ATOMIC_SEQ_CST); /* the fields are visible first */
}

/* New storage of a socket connect()ed in default mode: its owner from the slot. */
static __always_inline int recall_connect_cookie(__u64 cookie, struct sock_info *info)
{
	if (!cookie)
		return 0;
	struct connect_owner *c = connect_slot(cookie);
	if (!c || slot_cookie(c) != cookie)
		return 0;
	info->pid = c->pid;
	info->first_seen_ns = c->ts_ns;
	__builtin_memcpy(info->comm, c->comm, sizeof(info->comm));
	__builtin_memcpy(info->thread, c->thread, sizeof(info->thread));
	if (slot_cookie(c) != cookie) { /* rewritten meanwhile by a later socket's connect */
		info->pid = 0;
		__builtin_memset(info->comm, 0, sizeof(info->comm));
		__builtin_memset(info->thread, 0, sizeof(info->thread));
		info->first_seen_ns = 0;
		return 0;
	}
	info->owner_source = TW_OWNER_CONNECT;
	return 1;
}

static __always_inline int recall_connect(const struct sock *sk, struct sock_info *info)
{
	return recall_connect_cookie(sk->__sk_common.skc_cookie.counter, info); /* never generated here */
}

static __always_inline struct sock_info *sock_info_create(const struct sock *sk)
{
	struct sock_info *info = bpf_sk_storage_get(&sock_infos, (void *)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!info) {
		/*
		 * No memory for it (every caller passes a full socket): the
		 * socket is never marked notable, so its uneventful records
		 * (its owner's close, its destroy) are not sent in default mode.
		 */
		count(TW_CNT_NO_STORAGE);
		return NULL;
	}
	if (!info->first_seen_ns && !recall_connect(sk, info))
		info->first_seen_ns = bpf_ktime_get_ns();
	return info;
}

static __always_inline void owner_is_current(struct sock_info *info, __u32 tgid, __u8 source)
{
	info->pid = tgid;
	info->owner_source = source;
	owner_names(info->comm, info->thread);
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
 * the owner's task. A socket with storage (notable, or connect()ed with
 * emit_all) learns its closer. One without (accepted or connect()ed, closed
 * by a live process) is left without: making storage costs about 1 us per
 * connection (measured: tw_set_state 380 -> 270 ns per run on loopback
 * churn), and its owner is the connect slot's, or the holder of its inode
 * or the listener's, which user space finds. A closer that is exiting is
 * news (the process died): then storage is made.
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
