//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcpwatch's kernel half: watches the four TCP code paths that decide how a
 * connection fails (tcp_retransmit_skb, tcp_keepalive_timer, tcp_set_state,
 * tcp_send_active_reset) and the tracepoints that complete the story, and
 * sends one `struct event` per happening to user space.
 *
 * Every hook is a BTF tracepoint (tp_btf): fentry and kprobes are not
 * available everywhere tcpwatch must run, tracepoints are.
 *
 * Per-socket state lives here, not in user space: who owns the socket, and
 * whether anything about it is worth a narrative. It is socket-local
 * storage, found from the socket without hashing and freed by the kernel
 * with the socket. A connection that is born and dies normally costs a few
 * loads per tracepoint and no ring-buffer record, unless the user asked for
 * everything (emit_all). The hot paths read the (trusted) socket directly;
 * BPF_CORE_READ's probe reads are for building records and for the timer
 * path, whose socket pointer is derived from the timer.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "record.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define PF_EXITING 0x00000004
#define TCP_RTO_MAX_MS 120000
#define EAGAIN 11

/* Set by the loader before load (spec.Variables). */
const volatile __u8 emit_all = 0;           /* --events / --all: send every event */
const volatile __u32 hz = 250;              /* kernel CONFIG_HZ, for jiffies */
const volatile __u64 keepalive_timer_fn = 0; /* &tcp_keepalive_timer from kallsyms */
const volatile __u32 filter_netns = 0;      /* 0 = any */
const volatile __u16 filter_port = 0;       /* 0 = any; either side */
const volatile __u32 filter_pid = 0;        /* 0 = any; owner's tgid */
/*
 * With --all every event is a record: waking the reader for each costs
 * more than the record. Records then go without a wakeup (the reader
 * polls) unless the ring holds more than this many bytes. 0: always wake.
 */
const volatile __u64 lazy_wakeup_bytes = 0;

/* Unused except to make bpf2go emit the Go type. */
const struct event *unused_event __attribute__((unused));
const enum tw_event_kind *unused_kind __attribute__((unused));
const enum tw_event_flag *unused_flag __attribute__((unused));
const enum tw_owner_source *unused_owner_source __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* resized by the loader (--ring-size) */
} events SEC(".maps");

enum tw_counter {
	TW_CNT_LOST = 0,     /* ring buffer full: record dropped */
	TW_CNT_MAX,
};

/* Written by every program on ring-buffer failure, read by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TW_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

enum tw_sock_flag {
	TW_SK_NOTABLE = 1 << 0, /* something happened that may become a narrative */
	TW_SK_EXITING = 1 << 1, /* closed by an exiting owner */
};

/*
 * What tcpwatch remembers per socket. Created when a task first acts on
 * the socket (connect, send, receive, close) or when it becomes notable;
 * seeded from user space for sockets that existed before tcpwatch; freed by
 * the kernel with the socket. Owners are written from task context only:
 * timer and softirq events run in whatever task is on the CPU.
 */
struct sock_info {
	__u64 first_seen_ns;
	__u32 pid;
	__u32 exit_code;
	__u8 comm[TW_COMM_LEN];
	__u8 flags;
	__u8 _pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_info);
} sock_infos SEC(".maps");

/*
 * icsk_probes_out after the keepalive timer last ran, keyed by socket
 * cookie: "the peer answered our probes" shows as a drop to 0 at the next
 * run. Written and deleted by the timer path only, for sockets whose
 * probes went out; LRU, so a socket that died mid-probing cannot pin an
 * entry.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, __u64);
	__type(value, __u8);
} ka_probes SEC(".maps");

/*
 * The keepalive timer's entry/exit window on this CPU. Timer callbacks do
 * not nest on a CPU, so one slot per CPU is enough. Written at
 * timer_expire_entry, marked by set_state/send_reset inside the window,
 * consumed at timer_expire_exit.
 */
struct ka_window {
	__u64 timer;   /* the timer_list being run; 0 when no window is open */
	__u64 sk;      /* the socket it belongs to */
	__u64 cookie;  /* its cookie, 0 if never generated */
	__u8 killed;   /* the socket went to CLOSE inside the window */
	__u8 have_info;
	__u8 probes_before; /* icsk_probes_out at entry */
	__u8 _pad[5];
	struct sock_info info; /* the socket's owner, read at entry */
	struct event entry;    /* figures at entry: used for a kill, when sk may be gone */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ka_window);
} ka_windows SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);
	if (v)
		*v += 1;
}

static __always_inline __u32 jiffies_to_ms(__u64 j)
{
	return (__u32)(j * 1000 / (hz ? hz : 250));
}

/* sk is a trusted tracepoint argument: a direct (CO-RE relocated) load. */
static __always_inline int is_tcp(const struct sock *sk)
{
	return sk->sk_protocol == IPPROTO_TCP;
}

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

/* Without --all, storage is made only for sockets tasks act on or that matter. */
static __always_inline struct sock_info *sock_info_for_event(const struct sock *sk, int notable)
{
	if (emit_all || notable)
		return sock_info_create(sk);
	return sock_info_lookup(sk);
}

/* Only from task context: the current task really acts on the socket. */
static __always_inline void set_owner(struct sock_info *info)
{
	if (!info)
		return;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid && info->pid != tgid) {
		info->pid = tgid;
		bpf_get_current_comm(&info->comm, sizeof(info->comm));
	}
}

/* On the close paths: is the owner closing because it is exiting? */
static __always_inline void note_exit(struct sock_info *info)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (info && (task->flags & PF_EXITING)) {
		info->flags |= TW_SK_EXITING;
		info->exit_code = task->exit_code;
	}
}

/*
 * The default mode sends only what can become a narrative: once a socket
 * is notable, everything about it is sent so its story is whole.
 */
static __always_inline int wanted(struct sock_info *info, int notable_now)
{
	if (info && notable_now)
		info->flags |= TW_SK_NOTABLE;
	if (emit_all)
		return 1;
	if (notable_now)
		return 1;
	return info && (info->flags & TW_SK_NOTABLE);
}

/*
 * Records are filled twice over: with direct loads from a trusted socket
 * (tracepoint arguments: a load each) and with probe reads from the socket
 * the keepalive timer hook derives (a helper call each). One body, two
 * readers.
 */
#define RD_DIRECT(p, f) ((p)->f)
#define RD_PROBED(p, f) BPF_CORE_READ(p, f)

#define FILL_RECORD(e, tp, RD, RD_BF)                                                         \
	do {                                                                                   \
		const struct sock *__sk = &(tp)->inet_conn.icsk_inet.sk;                       \
		struct net *__net = RD(__sk, __sk_common.skc_net.net);                         \
		(e)->family = RD(__sk, __sk_common.skc_family);                                \
		(e)->sport = RD(__sk, __sk_common.skc_num);                                    \
		/* inet_put_port() zeroes inet_num before the CLOSE tracepoint; inet_sport stays. */ \
		if (!(e)->sport)                                                               \
			(e)->sport = bpf_ntohs(RD(tp, inet_conn.icsk_inet.inet_sport));        \
		(e)->dport = bpf_ntohs(RD(__sk, __sk_common.skc_dport));                       \
		(e)->netns = RD(__net, ns.inum);                                               \
		(e)->state = RD(__sk, __sk_common.skc_state);                                  \
		if ((e)->family == AF_INET6) {                                                 \
			*(__u64 *)&(e)->saddr[0] = RD(__sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[0]) | \
				(__u64)RD(__sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[1]) << 32; \
			*(__u64 *)&(e)->saddr[8] = RD(__sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[2]) | \
				(__u64)RD(__sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[3]) << 32; \
			*(__u64 *)&(e)->daddr[0] = RD(__sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32[0]) | \
				(__u64)RD(__sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32[1]) << 32; \
			*(__u64 *)&(e)->daddr[8] = RD(__sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32[2]) | \
				(__u64)RD(__sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32[3]) << 32; \
		} else {                                                                       \
			*(__u32 *)(e)->saddr = RD(__sk, __sk_common.skc_rcv_saddr);            \
			*(__u32 *)(e)->daddr = RD(__sk, __sk_common.skc_daddr);                \
		}                                                                              \
		(e)->ca_state = RD_BF(&(tp)->inet_conn, icsk_ca_state);                        \
		(e)->retransmits = RD(tp, inet_conn.icsk_retransmits);                         \
		(e)->backoff = RD(tp, inet_conn.icsk_backoff);                                 \
		(e)->probes_out = RD(tp, inet_conn.icsk_probes_out);                           \
		(e)->rto_ms = jiffies_to_ms(RD(tp, inet_conn.icsk_rto));                       \
		(e)->rto_max_ms = TCP_RTO_MAX_MS;                                              \
		if (bpf_core_field_exists(struct inet_connection_sock, icsk_rto_max))          \
			(e)->rto_max_ms = jiffies_to_ms(RD(tp, inet_conn.icsk_rto_max)) ?: TCP_RTO_MAX_MS; \
		(e)->user_timeout_ms = RD(tp, inet_conn.icsk_user_timeout);                    \
		(e)->sk_err = RD(__sk, sk_err);                                                \
		(e)->sk_err_soft = RD(__sk, sk_err_soft);                                      \
		(e)->srtt_us = RD(tp, srtt_us) >> 3;                                           \
		(e)->packets_out = RD(tp, packets_out);                                        \
		(e)->retrans_out = RD(tp, retrans_out);                                        \
		(e)->bytes_in_flight = RD(tp, snd_nxt) - RD(tp, snd_una);                      \
		(e)->total_retrans = RD(tp, total_retrans);                                    \
		(e)->keepalive_on = (RD(__sk, __sk_common.skc_flags) >> SOCK_KEEPOPEN) & 1;    \
		/* 0 in the socket means "the namespace's sysctl" (keepalive_*_when()). */     \
		__u32 __ka_time = RD(tp, keepalive_time);                                      \
		__u32 __ka_intvl = RD(tp, keepalive_intvl);                                    \
		__u8 __ka_probes = RD(tp, keepalive_probes);                                   \
		if (!__ka_time)                                                                \
			__ka_time = RD(__net, ipv4.sysctl_tcp_keepalive_time);                 \
		if (!__ka_intvl)                                                               \
			__ka_intvl = RD(__net, ipv4.sysctl_tcp_keepalive_intvl);               \
		if (!__ka_probes)                                                              \
			__ka_probes = RD(__net, ipv4.sysctl_tcp_keepalive_probes);             \
		(e)->keepalive_time_ms = jiffies_to_ms(__ka_time);                             \
		(e)->keepalive_intvl_ms = jiffies_to_ms(__ka_intvl);                           \
		(e)->keepalive_probes = __ka_probes;                                           \
		(e)->retries2 = RD(__net, ipv4.sysctl_tcp_retries2);                           \
		(e)->syn_retries = RD(__net, ipv4.sysctl_tcp_syn_retries);                     \
		/* Nothing was ever acknowledged before the handshake completes. */            \
		__u32 __rcv = RD(tp, rcv_tstamp);                                              \
		if (__rcv && (e)->state != TCP_SYN_SENT && (e)->state != TCP_LISTEN)           \
			(e)->ack_age_ms = jiffies_to_ms((__u32)bpf_jiffies64() - __rcv);       \
	} while (0)

/* A trusted tracepoint socket: its tcp_sock view makes every field a load. */
static __always_inline void fill_from_sk(struct event *e, const struct sock *sk)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	if (tp)
		FILL_RECORD(e, tp, RD_DIRECT, BPF_CORE_READ_BITFIELD);
	else
		FILL_RECORD(e, (const struct tcp_sock *)sk, RD_PROBED, BPF_CORE_READ_BITFIELD_PROBED);
}

/* A socket pointer helpers do not accept (the keepalive timer's). */
static __always_inline void fill_from_untrusted(struct event *e, const struct sock *sk)
{
	FILL_RECORD(e, (const struct tcp_sock *)sk, RD_PROBED, BPF_CORE_READ_BITFIELD_PROBED);
}

static __always_inline void fill_owner(struct event *e, const struct sock_info *info)
{
	if (!info)
		return;
	e->first_seen_ns = info->first_seen_ns;
	e->pid = info->pid;
	__builtin_memcpy(e->comm, info->comm, sizeof(e->comm));
	if (info->flags & TW_SK_EXITING) {
		e->flags |= TW_F_OWNER_EXITING;
		e->exit_code = info->exit_code;
	}
}

static __always_inline int filtered_out(const struct event *e)
{
	if (filter_netns && e->netns != filter_netns)
		return 1;
	if (filter_port && e->sport != filter_port && e->dport != filter_port)
		return 1;
	if (filter_pid && e->pid != filter_pid)
		return 1;
	return 0;
}

static __always_inline struct event *reserve(void)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TW_CNT_LOST);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	return e;
}

static __always_inline void submit(struct event *e)
{
	if (filtered_out(e)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return;
	}
	__u64 flags = 0;
	if (lazy_wakeup_bytes)
		flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > lazy_wakeup_bytes ?
				BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

/* The common case: one full TCP socket, one event. */
static __always_inline struct event *emit_sk(const struct sock *sk, const struct sock_info *info, __u8 kind)
{
	struct event *e = reserve();
	if (!e)
		return NULL;
	e->kind = kind;
	e->cookie = bpf_get_socket_cookie((void *)sk);
	fill_from_sk(e, sk);
	fill_owner(e, info);
	return e;
}

/* Inside an open keepalive window for this socket on this CPU? */
static __always_inline struct ka_window *ka_window_for(const struct sock *sk)
{
	__u32 zero = 0;
	struct ka_window *w = bpf_map_lookup_elem(&ka_windows, &zero);
	if (w && w->timer && w->sk == (__u64)sk)
		return w;
	return NULL;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tw_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (!is_tcp(sk))
		return 0;
	int notable = 0;
	struct sock_info *info;

	/* Transitions that only happen in the owner's own syscalls (or exit). */
	if (newstate == TCP_SYN_SENT ||
	    (oldstate == TCP_ESTABLISHED && newstate == TCP_FIN_WAIT1) ||
	    (oldstate == TCP_CLOSE_WAIT && newstate == TCP_LAST_ACK)) {
		info = sock_info_create(sk);
		set_owner(info);
		if (newstate != TCP_SYN_SENT)
			note_exit(info);
		if (info && (info->flags & TW_SK_EXITING))
			notable = 1;
	} else if (newstate == TCP_CLOSE) {
		/* A connection that dies with an error is always worth a story. */
		notable = sk->sk_err != 0;
		info = sock_info_for_event(sk, notable);
	} else if (emit_all) {
		info = sock_info_create(sk);
	} else {
		/*
		 * The steps in between (handshake, FIN received, FIN_WAIT2) are
		 * not sent without --all, even for a notable socket: its
		 * records carry their state, and this keeps the common
		 * transitions down to a few loads.
		 */
		return 0;
	}
	struct ka_window *w = NULL;
	if (newstate == TCP_CLOSE) {
		w = ka_window_for(sk);
		if (w)
			w->killed = 1;
	}

	if (!wanted(info, notable))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_STATE);
	if (!e)
		return 0;
	e->state = newstate;
	e->old_state = oldstate;
	if (w)
		e->flags |= TW_F_IN_KA_TIMER;
	submit(e);
	return 0;
}

static __always_inline int handle_retransmit(const struct sock *sk, int err)
{
	if (!sk)
		return 0;
	const struct inet_connection_sock *icsk = (const void *)sk;
	__u8 state = sk->__sk_common.skc_state;
	__u8 ca_state = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state);

	/*
	 * An RTO retransmission (the peer stopped acknowledging) or a SYN
	 * retransmission is the start of a stall. Fast retransmits and loss
	 * probes are routine: counted by the kernel (total_retrans), not sent.
	 */
	int rto = ca_state == TCP_CA_Loss || state == TCP_SYN_SENT || state == TCP_SYN_RECV;
	if (!emit_all && !rto)
		return 0;
	struct sock_info *info = sock_info_for_event(sk, rto);
	if (!wanted(info, rto))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_RETRANSMIT);
	if (!e)
		return 0;
	e->detail = err;
	submit(e);
	return 0;
}

/* 6.17+: also fires for failed attempts, with their error. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tw_retransmit_err, const struct sock *sk, const struct sk_buff *skb, int err)
{
	return handle_retransmit(sk, err);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tw_retransmit, const struct sock *sk, const struct sk_buff *skb)
{
	return handle_retransmit(sk, 0);
}

static __always_inline int reason_is_owner_close(int reason)
{
	if (reason < 0)
		return 0;
	return reason == bpf_core_enum_value(enum sk_rst_reason, SK_RST_REASON_TCP_ABORT_ON_CLOSE) ||
	       reason == bpf_core_enum_value(enum sk_rst_reason, SK_RST_REASON_TCP_ABORT_ON_LINGER) ||
	       reason == bpf_core_enum_value(enum sk_rst_reason, SK_RST_REASON_TCP_DISCONNECT_WITH_DATA);
}

/* A reset sent with no full socket behind it: the tuple comes from the packet. */
static __always_inline void emit_reply_reset_nosock(const struct sk_buff *skb, int reason)
{
	struct event *e = reserve();
	if (!e)
		return;
	e->kind = TW_EV_SEND_RESET;
	e->flags = TW_F_REPLY_RESET | TW_F_NO_SOCK;
	e->detail = reason;
	e->netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);

	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct tcphdr tcp;
	if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th)) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
	/* The reset answers the received segment: it goes back to its source. */
	e->sport = bpf_ntohs(tcp.dest);
	e->dport = bpf_ntohs(tcp.source);
	__u8 version = 0;
	bpf_probe_read_kernel(&version, 1, head + nh);
	if ((version >> 4) == 6) {
		struct ipv6hdr ip6;
		bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh);
		e->family = AF_INET6;
		__builtin_memcpy(e->saddr, &ip6.daddr, 16);
		__builtin_memcpy(e->daddr, &ip6.saddr, 16);
	} else {
		struct iphdr ip4;
		bpf_probe_read_kernel(&ip4, sizeof(ip4), head + nh);
		e->family = AF_INET;
		__builtin_memcpy(e->saddr, &ip4.daddr, 4);
		__builtin_memcpy(e->daddr, &ip4.saddr, 4);
	}
	submit(e);
}

static __always_inline int handle_send_reset(const struct sock *sk, const struct sk_buff *skb,
					     int reason)
{
	/*
	 * Replies to a received segment carry an skb; on 6.10+ sk may be NULL
	 * or a request/timewait socket. Only a full socket has our figures.
	 */
	__u8 state = sk ? sk->__sk_common.skc_state : 0;
	int full = sk && state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV;
	if (!full) {
		if (emit_all && skb)
			emit_reply_reset_nosock(skb, reason);
		return 0;
	}
	if (!is_tcp(sk))
		return 0;
	struct sock_info *info = sock_info_create(sk);
	/* close()/disconnect with unread data or SO_LINGER 0: the owner is acting. */
	if (!skb && reason_is_owner_close(reason)) {
		set_owner(info);
		note_exit(info);
	}
	if (!wanted(info, 1))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_SEND_RESET);
	if (!e)
		return 0;
	e->detail = reason;
	if (skb)
		e->flags |= TW_F_REPLY_RESET;
	if (!skb && ka_window_for(sk))
		e->flags |= TW_F_IN_KA_TIMER;
	submit(e);
	return 0;
}

/* 6.10+: the kernel says why. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tw_send_reset_reason, const struct sock *sk, const struct sk_buff *skb,
	     enum sk_rst_reason reason)
{
	return handle_send_reset(sk, skb, (int)reason);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tw_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	return handle_send_reset(sk, skb, TW_RST_REASON_UNKNOWN);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tw_receive_reset, struct sock *sk)
{
	if (!sk)
		return 0;
	struct sock_info *info = sock_info_create(sk);
	if (!wanted(info, 1))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_RECV_RESET);
	if (e)
		submit(e);
	return 0;
}

SEC("tp_btf/inet_sk_error_report")
int BPF_PROG(tw_error_report, const struct sock *sk)
{
	if (!is_tcp(sk))
		return 0;
	int err = sk->sk_err;
	/* error == 0 is ICMP error-queue noise, not an error the application sees. */
	if (!err)
		return 0;
	struct sock_info *info = sock_info_create(sk);
	if (!wanted(info, 1))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_ERROR);
	if (!e)
		return 0;
	e->detail = err;
	submit(e);
	return 0;
}

SEC("tp_btf/tcp_cong_state_set")
int BPF_PROG(tw_cong_state, struct sock *sk, const __u8 ca_state)
{
	const struct inet_connection_sock *icsk = (const void *)sk;
	/* Fires before the store: the old state is still in the socket. */
	__u8 old = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state);
	if (old == ca_state)
		return 0;
	/* By default only the end of an RTO episode matters: Loss -> anything. */
	if (!emit_all && old != TCP_CA_Loss)
		return 0;
	struct sock_info *info = sock_info_for_event(sk, 0);
	if (!wanted(info, 0))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_CONG_STATE);
	if (!e)
		return 0;
	e->old_state = old;
	e->ca_state = ca_state;
	submit(e);
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tw_destroy_sock, struct sock *sk)
{
	/* The storage goes with the socket; only a notable one is told. */
	struct sock_info *info = sock_info_lookup(sk);
	if (!wanted(info, 0))
		return 0;
	struct event *e = emit_sk(sk, info, TW_EV_DESTROY);
	if (e)
		submit(e);
	return 0;
}

/*
 * tcp_keepalive_timer has no tracepoint: watch the timer core run it.
 * Up to 6.18 the keepalive timer is sk->sk_timer; a later series moves it
 * to icsk->icsk_keepalive_timer.
 */
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
 * The socket pointer derived from the timer is not one helpers accept, so
 * sk_storage cannot be asked for it. Read our storage the way the helper
 * finds it: the socket's local-storage cache, at our map's slot.
 */
static __always_inline int read_sock_info(const struct sock *sk, struct sock_info *out)
{
	struct bpf_local_storage_map *smap = (void *)&sock_infos;
	__u16 idx = smap->cache_idx;
	__u32 id = smap->map.id;
	struct bpf_local_storage *st = BPF_CORE_READ(sk, sk_bpf_storage);
	if (!st || idx >= 16)
		return 0;
	struct bpf_local_storage_data *sdata = NULL;
	bpf_probe_read_kernel(&sdata, sizeof(sdata), &st->cache[idx]);
	if (sdata && BPF_CORE_READ(sdata, smap, map.id) == id)
		return bpf_probe_read_kernel(out, sizeof(*out), sdata->data) == 0;

	/* Not cached (storage seeded from user space is not): walk the socket's list. */
	struct hlist_node *node = BPF_CORE_READ(st, list.first);
	__u32 snode_off = bpf_core_field_offset(struct bpf_local_storage_elem, snode);
	__u32 sdata_off = bpf_core_field_offset(struct bpf_local_storage_elem, sdata);
	for (int i = 0; i < 4; i++) {
		if (!node)
			break;
		struct bpf_local_storage_data *d = (void *)node - snode_off + sdata_off;
		if (BPF_CORE_READ(d, smap, map.id) == id)
			return bpf_probe_read_kernel(out, sizeof(*out), d->data) == 0;
		node = BPF_CORE_READ(node, next);
	}
	return 0;
}

/* The keepalive record: the socket's figures and owner, read untrusted. */
static __always_inline void fill_keepalive_record(struct ka_window *w, const struct sock *sk)
{
	__builtin_memset(&w->entry, 0, sizeof(w->entry));
	w->entry.kind = TW_EV_KEEPALIVE;
	w->entry.cookie = w->cookie;
	fill_from_untrusted(&w->entry, sk);
	w->have_info = read_sock_info(sk, &w->info);
}

SEC("tp_btf/timer_expire_entry")
int BPF_PROG(tw_timer_entry, struct timer_list *timer, unsigned long baseclk)
{
	if (!keepalive_timer_fn || (__u64)timer->function != keepalive_timer_fn)
		return 0;
	__u32 zero = 0;
	struct ka_window *w = bpf_map_lookup_elem(&ka_windows, &zero);
	if (!w)
		return 0;
	const struct sock *sk = keepalive_sock(timer);
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	/* The same handler runs orphaned FIN_WAIT2 timeouts: not keepalive. */
	if (state != TCP_ESTABLISHED && state != TCP_CLOSE_WAIT) {
		w->timer = 0;
		return 0;
	}
	w->timer = (__u64)timer;
	w->sk = (__u64)sk;
	w->killed = 0;
	w->have_info = 0;
	w->entry.kind = 0;
	/* Read, never generate: this pointer is not one helpers accept. */
	w->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	w->probes_before = BPF_CORE_READ((const struct inet_connection_sock *)sk, icsk_probes_out);

	/*
	 * Most runs re-arm the timer or send one answered probe: a few reads.
	 * Only a run that may kill the socket (probes used up, or a
	 * TCP_USER_TIMEOUT) records everything now, since the socket may be
	 * gone at exit.
	 */
	const struct tcp_sock *tp = (const void *)sk;
	__u8 probes = BPF_CORE_READ(tp, keepalive_probes);
	if (!probes) {
		struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
		probes = BPF_CORE_READ(net, ipv4.sysctl_tcp_keepalive_probes);
	}
	if (w->probes_before >= probes || BPF_CORE_READ(tp, inet_conn.icsk_user_timeout)) {
		fill_keepalive_record(w, sk);
	}
	return 0;
}

SEC("tp_btf/timer_expire_exit")
int BPF_PROG(tw_timer_exit, struct timer_list *timer)
{
	__u32 zero = 0;
	struct ka_window *w = bpf_map_lookup_elem(&ka_windows, &zero);
	if (!w || !w->timer || w->timer != (__u64)timer)
		return 0;
	w->timer = 0;

	__u64 cookie = w->cookie;
	__u8 probes_before = w->probes_before;
	__u8 flags = TW_F_IN_KA_TIMER;
	__u8 probes_now = probes_before;
	__u8 *last = cookie ? bpf_map_lookup_elem(&ka_probes, &cookie) : NULL;
	__u8 last_probes = last ? *last : 0;

	if (w->killed) {
		/* The timer may have dropped the last reference: do not touch sk. */
		flags |= TW_F_KA_KILLED;
	} else {
		const struct inet_connection_sock *icsk = (const void *)w->sk;
		probes_now = BPF_CORE_READ(icsk, icsk_probes_out);
		if (probes_now > probes_before)
			flags |= TW_F_KA_PROBE;
		/* ACKs reset probes_out; the peer answered since we last looked. */
		if (last_probes && probes_before == 0)
			flags |= TW_F_KA_ANSWERED;
	}
	if (cookie) {
		if (probes_now && !(flags & TW_F_KA_KILLED))
			bpf_map_update_elem(&ka_probes, &cookie, &probes_now, BPF_ANY);
		else if (last)
			bpf_map_delete_elem(&ka_probes, &cookie);
	}

	if (!(flags & (TW_F_KA_KILLED | TW_F_KA_PROBE | TW_F_KA_ANSWERED)))
		return 0;
	/*
	 * A healthy peer answers the first probe at once; only a second probe
	 * (the first went unanswered for a whole interval), a kill, or the
	 * answer that ends such probing is news.
	 */
	int notable = (flags & TW_F_KA_KILLED) || ((flags & TW_F_KA_PROBE) && probes_now >= 2) ||
		      ((flags & TW_F_KA_ANSWERED) && last_probes >= 2);
	if (!(flags & TW_F_KA_KILLED) && !w->entry.kind) {
		/* The socket lives: its figures now, after the probe. */
		if (!emit_all && !notable)
			return 0;
		fill_keepalive_record(w, (const void *)w->sk);
	}
	if (!w->entry.kind)
		return 0; /* killed without a record from entry: its reset and CLOSE tell it */
	if (!emit_all && !notable && !(w->have_info && (w->info.flags & TW_SK_NOTABLE)))
		return 0;
	struct event *e = reserve();
	if (!e)
		return 0;
	__u64 ts = e->ts_ns;
	__builtin_memcpy(e, &w->entry, sizeof(*e));
	e->ts_ns = ts;
	e->probes_out = probes_now;
	e->flags |= flags;
	if (w->have_info)
		fill_owner(e, &w->info);
	submit(e);
	return 0;
}
