/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The TCP timers have no tracepoints: tcpwatch watches the timer core run
 * them (timer:timer_expire_entry/exit) and keeps, per CPU, a window from a
 * TCP timer's entry to its exit (maps.h, struct tw_window).
 *
 * - tcp_keepalive_timer: compare icsk_probes_out at entry and exit to see
 *   "probe N sent", a drop to 0 since the last run to see "answered", and
 *   a CLOSE inside the window to see the kill.
 * - tcp_write_timer (the retransmission timer): before 6.17 the
 *   tcp_retransmit_skb tracepoint stays silent for a retransmission that
 *   fails locally (link down), yet icsk_retransmits counts it. If the
 *   counter grew in the window and the tracepoint did not fire for this
 *   socket, the exit sends a RETRANSMIT with TW_F_FROM_TIMER. From 6.17
 *   the tracepoint fires for failed attempts too, so this stays quiet.
 *
 * The handlers' addresses are weak __ksym externs, resolved by the loader
 * from /proc/kallsyms; an unresolved one is 0 and matches no timer. The
 * socket is the timer's container: a pointer the verifier does not trust,
 * so every read is a probe read (fill_probed) and socket-local storage is
 * out of reach: timer records carry no owner (user space knows it).
 */
#ifndef TW_KEEPALIVE_H
#define TW_KEEPALIVE_H

#include "maps.h"
#include "fill.h"
#include "drops.h"

/* icsk_pending values (include/net/inet_connection_sock.h, stable since 2.6). */
#define ICSK_TIME_RETRANS 1
#define ICSK_TIME_PROBE0 3

extern void tcp_keepalive_timer __ksym __weak; /* cilium/ebpf wants a bare void type */
extern void tcp_write_timer __ksym __weak;

/* Up to 6.18 the keepalive timer is sk->sk_timer; a later series moves it to icsk. */
struct inet_connection_sock___ka {
	struct timer_list icsk_keepalive_timer;
} __attribute__((preserve_access_index));

static __always_inline const struct sock *keepalive_sock(const struct timer_list *timer)
{
	if (bpf_core_field_exists(struct inet_connection_sock___ka, icsk_keepalive_timer))
		return (const void *)timer -
		       bpf_core_field_offset(struct inet_connection_sock___ka, icsk_keepalive_timer);
	return (const void *)timer - bpf_core_field_offset(struct sock, sk_timer);
}

/*
 * The same series moves the retransmission timer the other way: from
 * icsk_retransmit_timer to struct sock, as tcp_retransmit_timer in a union
 * with sk_timer (the 7.3 kernel's BTF). Without this the write timer's
 * window never opened there: no window probes, no drops wanted for them.
 */
struct sock___rtx {
	struct timer_list tcp_retransmit_timer;
} __attribute__((preserve_access_index));

static __always_inline int write_timer_known(void)
{
	return bpf_core_field_exists(struct inet_connection_sock, icsk_retransmit_timer) ||
	       bpf_core_field_exists(struct sock___rtx, tcp_retransmit_timer);
}

static __always_inline const struct sock *write_timer_sock(const struct timer_list *timer)
{
	if (bpf_core_field_exists(struct inet_connection_sock, icsk_retransmit_timer))
		return (const void *)timer -
		       bpf_core_field_offset(struct inet_connection_sock, icsk_retransmit_timer);
	return (const void *)timer - bpf_core_field_offset(struct sock___rtx, tcp_retransmit_timer);
}

static __always_inline struct tw_window *window(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&tw_windows, &zero);
}

/* The open window on this CPU, if it is this socket's. */
static __always_inline struct tw_window *window_for(const struct sock *sk)
{
	struct tw_window *w = window();
	if (w && w->timer && w->sk == (__u64)sk)
		return w;
	return NULL;
}

/*
 * A timer's socket that reached CLOSE inside the timer's window: the
 * window must know, or its exit reads a socket that may be gone and sends
 * a probe record after the end. tw_set_state marks it; the error report
 * (tcp_done_with_error) and the destroy (an orphan's tcp_done) mark it
 * too, because tw_set_state can be skipped: a timer that fires while the
 * same program runs in process context on this CPU (another socket's
 * state change) finds it active, and the kernel skips the nested run
 * (counted in its recursion_misses, the loss record's programs_skipped).
 */
static __always_inline void closed_in_window(const struct sock *sk)
{
	struct tw_window *w = window_for(sk);
	if (w)
		w->killed = 1;
}

static __always_inline void keepalive_entry(struct tw_window *w, const struct timer_list *timer)
{
	const struct sock *sk = keepalive_sock(timer);
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	/* The same handler runs orphaned FIN_WAIT2 timeouts: not keepalive. */
	if (state != TCP_ESTABLISHED && state != TCP_CLOSE_WAIT)
		return;
	const struct tcp_sock *tp = (const void *)sk;
	w->timer = (__u64)timer;
	w->sk = (__u64)sk;
	w->kind = TW_WIN_KEEPALIVE;
	w->killed = 0;
	w->have_entry = 0;
	w->before = BPF_CORE_READ(tp, inet_conn.icsk_probes_out);

	/*
	 * Most runs re-arm the timer or send a probe: a few reads. Only a run
	 * that may kill (probes used up, or TCP_USER_TIMEOUT) reads the
	 * record now, since the socket may be gone at exit.
	 */
	__u8 probes = BPF_CORE_READ(tp, keepalive_probes);
	if (!probes) {
		struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
		probes = BPF_CORE_READ(net, ipv4.sysctl_tcp_keepalive_probes);
	}
	if (w->before >= probes || BPF_CORE_READ(tp, inet_conn.icsk_user_timeout)) {
		__builtin_memset(&w->entry, 0, sizeof(w->entry));
		fill_probed(&w->entry, sk);
		w->have_entry = 1;
	}
}

/*
 * Decides what the keepalive run did and leaves the record in w->entry;
 * returns its flags, 0 for nothing to send. Sent: every probe (probes_out
 * grew), the kill, and the answer that ends probing. User space decides
 * what is news.
 */
/* Deletes a socket's ka_probes entry, keeping trouble_gate's count of them. */
static __always_inline void ka_delete(__u64 key)
{
	if (bpf_map_delete_elem(&ka_probes, &key))
		return; /* none, or deleted on another CPU meanwhile */
	struct trouble_gate *g = gate();
	if (g)
		__sync_fetch_and_add(&g->ka_live, -1);
}

/*
 * probes_out after this run, for the next one. An entry of this address
 * (this socket's, or an earlier one's) is rewritten in place; a new one
 * is inserted, or counted when the map is full (TW_CNT_KA_FULL).
 */
static __always_inline void ka_remember(__u64 key, struct ka_last *present, __u64 cookie, __u8 probes_out)
{
	if (present) {
		present->cookie = cookie;
		present->probes_out = probes_out;
		return;
	}
	struct ka_last v = { .cookie = cookie, .probes_out = probes_out };
	long err = bpf_map_update_elem(&ka_probes, &key, &v, BPF_NOEXIST);
	if (!err) {
		struct trouble_gate *g = gate();
		if (g)
			__sync_fetch_and_add(&g->ka_live, 1);
	} else if (err != -EEXIST) {
		count(TW_CNT_KA_FULL);
	}
}

/*
 * The user's filters on the timer's socket (probe reads): a socket they
 * exclude takes no room in ka_probes, its records being dropped anyway.
 */
static __always_inline int probed_passes(const struct sock *sk)
{
	if (!tw_cfg.filter_netns && !tw_cfg.filter_port)
		return 1;
	return filter_pass(BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum), BPF_CORE_READ(sk, __sk_common.skc_num),
			   bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport)));
}

/* A socket's end: its keepalive entry goes with it (ka_probes is no LRU). */
static __always_inline void ka_forget(const struct sock *sk)
{
	struct trouble_gate *g = gate();
	if (g && READ_ONCE(g->ka_live))
		ka_delete((__u64)sk);
}

static __always_inline __u16 keepalive_exit(struct tw_window *w)
{
	__u64 key = w->sk;
	struct ka_last *present = bpf_map_lookup_elem(&ka_probes, &key);
	struct ka_last *last = present;
	__u16 flags = TW_F_IN_KA_TIMER;

	if (w->killed) {
		/* The timer may have dropped the last reference: do not touch sk. */
		if (last)
			ka_delete(key);
		if (!w->have_entry)
			return 0; /* its reset and CLOSE records tell it */
		w->entry.probes_out = w->before;
		return flags | TW_F_KA_KILLED;
	}
	const struct sock *sk = (const void *)w->sk;
	__u64 cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (last && last->cookie != cookie)
		last = NULL; /* another socket's, at a reused address */
	__u8 now = BPF_CORE_READ((const struct inet_connection_sock *)sk, icsk_probes_out);
	if (now > w->before)
		flags |= TW_F_KA_PROBE;
	/* Any ACK resets probes_out: the peer answered since the last run. */
	if (last && last->probes_out && w->before == 0)
		flags |= TW_F_KA_ANSWERED;
	if (now) {
		if (probed_passes(sk))
			ka_remember(key, present, cookie, now);
	} else if (present)
		ka_delete(key);
	if (!(flags & (TW_F_KA_PROBE | TW_F_KA_ANSWERED)))
		return 0;
	if (flags & TW_F_KA_PROBE)
		mark_troubled(sk);
	__builtin_memset(&w->entry, 0, sizeof(w->entry));
	fill_probed(&w->entry, sk);
	return flags;
}

static __always_inline void write_timer_entry(struct tw_window *w, const struct timer_list *timer)
{
	if (!write_timer_known())
		return;
	const struct sock *sk = write_timer_sock(timer);
	w->timer = (__u64)timer;
	w->sk = (__u64)sk;
	w->kind = TW_WIN_WRITE;
	w->killed = 0;
	w->rtx_seen = 0;
	w->have_entry = 0;
	const struct inet_connection_sock *icsk = (const void *)sk;
	w->before = BPF_CORE_READ(icsk, icsk_retransmits);
	w->rto_before = BPF_CORE_READ(icsk, icsk_rto);
	w->backoff_before = BPF_CORE_READ(icsk, icsk_backoff);
	/* The handler switches on icsk_pending: the event that expired. */
	w->pending = BPF_CORE_READ(icsk, icsk_pending);
	w->probes_before = BPF_CORE_READ(icsk, icsk_probes_out);
	/* An RTO or a window probe: from now on this connection's drops are wanted. */
	if (w->pending == ICSK_TIME_RETRANS || w->pending == ICSK_TIME_PROBE0) {
		__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
		if (state != TCP_CLOSE && state != TCP_LISTEN)
			mark_troubled(sk);
	}
}

/*
 * The zero-window probe timer (tcp_probe_timer): new data waits and
 * nothing is in flight, because the peer's window is closed or because
 * every attempt to send fails on this host. Sent: every run that counted
 * a probe (icsk_probes_out after it, which an ACK resets to 0: a count
 * that does not grow means the peer answers), and the run that found
 * probing over (probes_out back to 0: the data left). Leaves the record
 * in w->entry and returns its flags, 0 for nothing to send.
 */
static __always_inline __u16 probe_timer_exit(struct tw_window *w)
{
	if (w->killed)
		return 0; /* the CLOSE and error records tell it; sk may be gone */
	const struct sock *sk = (const void *)w->sk;
	__u8 now = BPF_CORE_READ((const struct inet_connection_sock *)sk, icsk_probes_out);
	if (!now && !w->probes_before)
		return 0; /* deferred (socket owned by the user) or nothing to probe */
	__builtin_memset(&w->entry, 0, sizeof(w->entry));
	fill_probed(&w->entry, sk);
	w->entry.kind = TW_EV_PROBE0;
	/* The interval that expired, as for a retransmission. */
	w->entry.rto_ms = jiffies_to_ms(w->rto_before);
	w->entry.old_state = w->probes_before;
	return TW_F_FROM_TIMER;
}

/*
 * A retransmission the tracepoint did not show: icsk_retransmits grew in
 * the window and tcp_retransmit_skb did not fire for this socket. Leaves
 * the record in w->entry and returns its flags, 0 for nothing to send.
 */
static __always_inline __u16 write_timer_exit(struct tw_window *w)
{
	if (w->pending == ICSK_TIME_PROBE0)
		return probe_timer_exit(w);
	if (w->killed || w->rtx_seen)
		return 0; /* a kill: the CLOSE record tells it, and sk may be gone */
	const struct sock *sk = (const void *)w->sk;
	__u8 now = BPF_CORE_READ((const struct inet_connection_sock *)sk, icsk_retransmits);
	if (now <= w->before)
		return 0;
	__builtin_memset(&w->entry, 0, sizeof(w->entry));
	fill_probed(&w->entry, sk);
	w->entry.kind = TW_EV_RETRANSMIT;
	/*
	 * By exit the timer has doubled the RTO for the next expiry; the
	 * record, like the tracepoint's, names the RTO that expired.
	 */
	w->entry.rto_ms = jiffies_to_ms(w->rto_before);
	w->entry.backoff = w->backoff_before;
	return TW_F_FROM_TIMER;
}

#endif /* TW_KEEPALIVE_H */
