/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Putting a record in the ring buffer. Callers filter first (filter.h):
 * reserve() is only reached for a record that will be sent.
 */
#ifndef TW_EMIT_H
#define TW_EMIT_H

#include "config.h"
#include "maps.h"
#include "fill.h"
#include "filter.h"

static __always_inline struct event *reserve(__u8 kind)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TW_CNT_LOST);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	return e;
}

/*
 * With lazy_wakeup_bytes (emit_all) the reader polls, and is woken once
 * when the ring's fill crosses the mark: not for every record above it.
 * A wakeup is an irq_work, a self-IPI: under a hypervisor a VM exit of a
 * few microseconds. Forcing one per record once a lagging reader left the
 * ring above the mark made tw_set_state cost about 4 us per run (--all on
 * loopback churn). A crossing missed by racing producers costs at most
 * one poll interval.
 */
static __always_inline __u64 wakeup_flags(void)
{
	if (!tw_cfg.lazy_wakeup_bytes)
		return 0;
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	return avail > tw_cfg.lazy_wakeup_bytes && avail <= tw_cfg.lazy_wakeup_bytes + 2 * sizeof(struct lifecycle) ?
		       BPF_RB_FORCE_WAKEUP :
		       BPF_RB_NO_WAKEUP;
}

static __always_inline void submit(struct event *e)
{
	bpf_ringbuf_submit(e, wakeup_flags());
}

#include "lifecycle.h"

/*
 * The common case: one full TCP socket (a tracepoint argument), one
 * record, or none if the filters say no or the socket is not a tcp_sock.
 * The caller sets the kind's own fields and submits.
 */
static __always_inline struct event *emit_sk(const struct sock *sk, const struct sock_info *info, __u8 kind)
{
	if (tw_cfg.summarize)
		life_flush(sk, info); /* a summarised socket's states come first */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp || !tp_passes(tp))
		return NULL;
	struct event *e = reserve(kind);
	if (!e)
		return NULL;
	e->cookie = bpf_get_socket_cookie((void *)sk);
	fill_tp(e, tp);
	fill_owner(e, info);
	return e;
}

#endif /* TW_EMIT_H */
