/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * --all (tw_cfg.summarize): a normal lifecycle summarised in the kernel
 * and told in one record (struct lifecycle, record.h), as bcc's tcplife
 * does, instead of a record per state change: filling and reserving a
 * record for each of the ~10 state changes of a loopback connection (both
 * ends) was most of --all's cost in the kernel, and decoding them a third
 * of the reader's.
 *
 * A socket's state changes wait in a slot of an array keyed by its cookie
 * (below), not in socket-local storage, whose creation costs about 1 us
 * per socket (docs/performance.md). The slot is claimed at the socket's
 * first state change (connect: CLOSE -> SYN_SENT; an accepted socket:
 * its first after LISTEN -> SYN_RECV, see life_clones) and sent:
 *
 * - at tcp_destroy_sock, for a normal lifecycle (TW_F_LIFE_DESTROYED: the
 *   record stands for the destroy's too);
 * - at CLOSE when the socket is still held by its process (SOCK_DEAD not
 *   set: shutdown() both ways, a connect that failed, a disconnect), so
 *   its end is told then, not at the close() that may come much later;
 *   its destroy is then sent as without a summary;
 * - as soon as anything else is sent about the socket (emit_sk, the timer
 *   programs): a reset, an error, a retransmission, a congestion state, a
 *   timer's doing, a CLOSE with an error or inside a TCP timer, an owner
 *   that exits. The states so far come first, then that record, and from
 *   then on every event of the socket is a record as without a summary
 *   (the slot is free again), so its story is whole.
 * - when the slot is full (TW_LIFE_STEPS state changes): the rest of the
 *   socket's life goes the full way.
 *
 * A socket whose slot is taken by another one (a long-lived connection
 * whose cookie has the same low bits) is not summarised: its records go
 * the full way, as do those of sockets older than tcpwatch.
 */
#ifndef TW_LIFECYCLE_H
#define TW_LIFECYCLE_H

#include "config.h"
#include "maps.h"
#include "fill.h"
#include "sockinfo.h"
#include "filter.h"

#ifndef READ_ONCE
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
#endif

/*
 * The state changes of the sockets being summarised, direct-mapped by
 * cookie (slot = cookie % TW_LIFE_SLOTS). Claimed (cookie 0 -> the
 * socket's, a compare-and-exchange: two sockets of one slot may start on
 * two CPUs at once) and written by tw_set_state; sent and freed (cookie ->
 * 0) by whichever program sends the summary. Only the socket that holds a
 * slot writes it, and a socket's state changes are serialised by its lock.
 * The loader shrinks it to one entry when nothing is summarised. Never
 * deleted (array).
 */
#define TW_LIFE_SLOTS (1 << 16)

struct life_slot {
	__u64 cookie; /* the socket summarised here; 0: free */
	__u64 at_ns[TW_LIFE_STEPS];
	__u8 old_state[TW_LIFE_STEPS];
	__u8 new_state[TW_LIFE_STEPS];
	__u32 inode;  /* the socket's inode while it had a file (an accepted socket's destroy has none) */
	__u32 _pad;
	__u64 steps;  /* written with xchg (life_step), 64 bits for the atomics of -mcpu=v1: see life_send_entry */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TW_LIFE_SLOTS);
	__type(key, __u32);
	__type(value, struct life_slot);
} life_slots SEC(".maps");

static __always_inline struct life_slot *life_slot_of(__u64 cookie)
{
	__u32 i = (__u32)cookie & (TW_LIFE_SLOTS - 1);
	return bpf_map_lookup_elem(&life_slots, &i);
}

/* The slot of a socket being summarised (its cookie read, never made here). */
static __always_inline struct life_slot *life_held_cookie(__u64 cookie)
{
	if (!tw_cfg.summarize || !cookie)
		return NULL;
	struct life_slot *s = life_slot_of(cookie);
	if (!s || READ_ONCE(s->cookie) != cookie)
		return NULL;
	return s;
}

static __always_inline struct life_slot *life_held(const struct sock *sk)
{
	return life_held_cookie(sk->__sk_common.skc_cookie.counter);
}

/* The socket's first state change: a slot, unless another socket holds it. cookie: made by the caller. */
static __always_inline struct life_slot *life_claim_cookie(__u64 cookie)
{
	struct life_slot *s = life_slot_of(cookie);
	if (!s)
		return NULL;
	if (READ_ONCE(s->cookie) == cookie)
		return s; /* connect() again after a failed one: the story goes on */
	if (READ_ONCE(s->cookie) || __sync_val_compare_and_swap(&s->cookie, 0, cookie) != 0)
		return NULL;
	s->steps = 0;
	s->inode = 0;
	return s;
}

static __always_inline struct life_slot *life_claim(const struct sock *sk)
{
	return life_claim_cookie(bpf_get_socket_cookie((void *)sk));
}

/*
 * An accepted socket between LISTEN -> SYN_RECV and its next state change
 * (or its first record), with the time of that change. Its cookie is not
 * yet its own at LISTEN -> SYN_RECV on every
 * kernel: 6.1's inet_csk_clone_lock() fires the tracepoint, then copies
 * the request socket's cookie (ir_cookie, most often 0) over the clone's,
 * so a slot claimed then would be keyed by a cookie the socket has already
 * lost (its states then went the full way, and the slot was never freed).
 * By the clone's next state change its cookie is for good: it claims its
 * slot then (life_adopt_clone). The summary leaves LISTEN -> SYN_RECV out
 * (the listener's record says it all); a clone that gets no slot, or is
 * told of before its next state change (life_flush), has it told then as
 * the state record it would have been, with its own time.
 *
 * The clone waits in an array direct-mapped by its address (a hash of
 * it), tagged with the address: it was a hash map, whose insert, lookup
 * and delete (a bucket lock each, the insert a free-list pop) were about
 * a tenth of --all's tw_set_state cost on loopback churn. Only the clone
 * whose address is the tag writes or frees its entry: claimed with a
 * compare-and-exchange (two clones of one index may be made on two CPUs at
 * once), its time written after, read and freed (tag -> 0, exchanged
 * after the read) at the clone's next state change, which its lock
 * serialises with the first. An entry lives microseconds (the handshake's
 * last ACK makes the clone ESTABLISHED in the same softirq) or, for a Fast
 * Open child, until the client's ACK; a clone whose entry is held by
 * another waiting clone goes the full way, its LISTEN -> SYN_RECV told as
 * the state record it is. The loader shrinks it to one entry when nothing
 * is summarised. Never deleted (array).
 */
#define TW_LIFE_CLONES 4096

struct life_clone {
	__u64 sk;    /* the clone's address; 0: free */
	__u64 at_ns; /* when it went LISTEN -> SYN_RECV (ktime ns) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TW_LIFE_CLONES);
	__type(key, __u32);
	__type(value, struct life_clone);
} life_clones SEC(".maps");

/*
 * The clone's entry: sockets are slab objects a few KiB apart, a
 * multiplicative hash spreads them. The verifier allows no arithmetic on
 * a socket pointer but its difference with another pointer (a privileged
 * program's, as tcpwatch's are): the map's address, a constant, will do.
 */
static __always_inline struct life_clone *life_clone_of(const struct sock *sk)
{
	__u64 addr = (__u64)sk - (__u64)(void *)&life_clones;
	__u32 i = (__u32)((addr * 0x9E3779B97F4A7C15ULL) >> 52) & (TW_LIFE_CLONES - 1);
	return bpf_map_lookup_elem(&life_clones, &i);
}

/* LISTEN -> SYN_RECV: 1 if the clone waits for its next state change. */
static __always_inline int life_defer_clone(const struct sock *sk)
{
	struct life_clone *c = life_clone_of(sk);
	if (!c || READ_ONCE(c->sk) || __sync_val_compare_and_swap(&c->sk, 0, (__u64)sk) != 0)
		return 0;
	c->at_ns = bpf_ktime_get_ns();
	return 1;
}

/* A clone that waited: its LISTEN -> SYN_RECV time, and it waits no more. */
static __always_inline int life_take_clone(const struct sock *sk, __u64 *at)
{
	struct life_clone *c = life_clone_of(sk);
	if (!c || READ_ONCE(c->sk) != (__u64)sk)
		return 0;
	*at = c->at_ns;
	__atomic_exchange_n(&c->sk, 0, __ATOMIC_SEQ_CST); /* free once read */
	return 1;
}

/* A clone's LISTEN -> SYN_RECV, told late as the record it would have been. */
static __always_inline void life_tell_clone(const struct sock *sk, const struct sock_info *info, __u64 at)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp || !tp_passes(tp))
		return;
	struct event *e = reserve(TW_EV_STATE);
	if (!e)
		return;
	e->cookie = bpf_get_socket_cookie((void *)sk);
	fill_tp(e, tp);
	fill_owner(e, info);
	e->ts_ns = at;
	e->state = TCP_SYN_RECV;
	e->old_state = TCP_LISTEN;
	bpf_ringbuf_submit(e, wakeup_flags());
}

static __always_inline void life_free(struct life_slot *s)
{
	__atomic_exchange_n(&s->cookie, 0, __ATOMIC_SEQ_CST);
}

/* A state change at now (bpf_ktime_get_ns) into the socket's slot. */
static __always_inline void life_step_at(struct life_slot *s, const struct sock *sk, int oldstate, int newstate,
					 __u64 now)
{
	__u64 n = s->steps;
	if (n >= TW_LIFE_STEPS)
		return;
	s->at_ns[n] = now;
	s->old_state[n] = oldstate;
	s->new_state[n] = newstate;
	/* Fully ordered (life_send_entry): the step is there before the count says so. */
	__atomic_exchange_n(&s->steps, n + 1, __ATOMIC_SEQ_CST);
	if (READ_ONCE(s->cookie) != sk->__sk_common.skc_cookie.counter)
		count(TW_CNT_LOST); /* a timer program sent and freed the slot meanwhile: this change is lost */
	if (!s->inode) {
		/*
		 * The inode around the struct socket (fill_sock.h): its file's
		 * f_inode, direct loads, where there is a file (a kernel socket
		 * has none: a probe read then, as fill_tp's).
		 */
		struct socket *so = sk->sk_socket;
		if (so) {
			struct file *f = so->file;
			s->inode = f ? f->f_inode->i_ino : BPF_CORE_READ((struct socket_alloc *)so, vfs_inode.i_ino);
		}
	}
}

static __always_inline void life_step(struct life_slot *s, const struct sock *sk, int oldstate, int newstate)
{
	life_step_at(s, sk, oldstate, newstate, bpf_ktime_get_ns());
}

static __always_inline struct lifecycle *life_reserve(void)
{
	struct lifecycle *l = bpf_ringbuf_reserve(&events, sizeof(*l), 0);
	if (!l) {
		count(TW_CNT_LOST);
		return NULL;
	}
	__builtin_memset(l, 0, sizeof(*l));
	return l;
}

static __always_inline void life_finish(struct lifecycle *l, struct life_slot *s, __u64 n)
{
	l->e.ts_ns = bpf_ktime_get_ns();
	l->e.kind = TW_EV_LIFECYCLE;
	if (!l->e.inode)
		l->e.inode = s->inode;
	l->steps = n < TW_LIFE_STEPS ? n : TW_LIFE_STEPS;
	__builtin_memcpy(l->at_ns, s->at_ns, sizeof(l->at_ns));
	__builtin_memcpy(l->old_state, s->old_state, sizeof(l->old_state));
	__builtin_memcpy(l->new_state, s->new_state, sizeof(l->new_state));
	bpf_ringbuf_submit(l, wakeup_flags());
}

/*
 * Sends the summary with the socket's figures now, and frees the slot.
 * info is the socket's storage as the caller found it (NULL: none).
 */
static __always_inline void life_send_sk(struct life_slot *s, const struct sock *sk,
					 const struct sock_info *info, __u16 flags)
{
	/* Claimed before the filters could tell (no local port at connect yet): they decide here. */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	struct lifecycle *l = tp && tp_passes(tp) ? life_reserve() : NULL;
	if (l) {
		l->e.cookie = s->cookie;
		fill_tp(&l->e, tp);
		/* The connect owner waits in its slot, as in the default mode. */
		struct sock_info owner = {};
		if (info)
			fill_owner(&l->e, info);
		else if (recall_connect(sk, &owner))
			fill_owner(&l->e, &owner);
		l->e.flags |= flags;
		life_finish(l, s, s->steps);
	}
	life_free(s);
}

/*
 * The same from a timer program's record, read at the timer's entry. The
 * programs with a trusted socket run under its lock, one at a time; this
 * one runs after the timer let the lock go, so a state change may be
 * written into the slot on another CPU while it is sent. Either side sees
 * it (the steps count and the cookie are exchanged, fully ordered) and
 * counts the change lost, so the stories told after it say so.
 */
static __always_inline void life_send_entry(const struct event *entry)
{
	struct life_slot *s = life_held_cookie(entry->cookie);
	if (!s)
		return;
	__u64 n = __atomic_fetch_or(&s->steps, 0, __ATOMIC_SEQ_CST);
	struct lifecycle *l = life_reserve();
	if (l) {
		__builtin_memcpy(&l->e, entry, sizeof(l->e));
		l->e.detail = 0;
		l->e.old_state = 0;
		l->e.flags &= TW_F_ORPHAN;
		struct sock_info owner = {};
		if (recall_connect_cookie(entry->cookie, &owner))
			fill_owner(&l->e, &owner);
		life_finish(l, s, n);
	}
	life_free(s);
	if (READ_ONCE(s->steps) != n)
		count(TW_CNT_LOST);
}

/* Before any other record of a trusted socket: its states so far. */
static __always_inline void life_flush(const struct sock *sk, const struct sock_info *info)
{
	struct life_slot *s = life_held(sk);
	if (s) {
		life_send_sk(s, sk, info, 0);
		return;
	}
	/* A clone told of before its next state change: it goes the full way. */
	__u64 at;
	if (sk->__sk_common.skc_state == TCP_SYN_RECV && life_take_clone(sk, &at))
		life_tell_clone(sk, info, at);
}

/*
 * A state change from SYN_RECV: a clone that waited claims its slot now
 * that its cookie is its own, or, when another socket holds it, has its
 * LISTEN -> SYN_RECV told and goes the full way.
 */
static __always_inline void life_adopt_clone(const struct sock *sk)
{
	__u64 at;
	if (life_take_clone(sk, &at) && !life_claim(sk))
		life_tell_clone(sk, NULL, at);
}

#endif /* TW_LIFECYCLE_H */
