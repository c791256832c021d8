/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The user's filters, decided from the socket before anything is reserved
 * or filled: a filtered-out event costs a few loads. There is no pid
 * filter here: the kernel does not know who owns accepted or pre-existing
 * sockets, so user space filters by owner.
 */
#ifndef TW_FILTER_H
#define TW_FILTER_H

#include "config.h"
#include "fill.h"

static __always_inline int filter_pass(__u32 netns, __u16 sport, __u16 dport)
{
	if (tw_cfg.filter_netns && netns != tw_cfg.filter_netns)
		return 0;
	if (tw_cfg.filter_port && sport != tw_cfg.filter_port && dport != tw_cfg.filter_port)
		return 0;
	return 1;
}

/* A trusted socket's view; with no filter set the verifier drops it all. */
static __always_inline int tp_passes(const struct tcp_sock *tp)
{
	if (!tw_cfg.filter_netns && !tw_cfg.filter_port)
		return 1;
	return filter_pass(tp_netns(tp), tp_sport(tp),
			   bpf_ntohs(tp->inet_conn.icsk_inet.sk.__sk_common.skc_dport));
}

/* A record filled before reserving it (the timer programs). */
static __always_inline int record_passes(const struct event *e)
{
	return filter_pass(e->netns, e->sport, e->dport);
}

#endif /* TW_FILTER_H */
