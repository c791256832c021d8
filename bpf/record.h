/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The record the kernel half sends to user space through the ring buffer,
 * and the enums that qualify it. Shared with Go through bpf2go (-type for
 * the struct and every enum): keep every field naturally aligned and never
 * pack, so the Go struct has the same layout and decoding is a
 * length-checked copy. Go takes its constants from the generated enums, so
 * a value changed here is changed there.
 */
#ifndef TW_RECORD_H
#define TW_RECORD_H

#define TW_COMM_LEN 16

/* What happened. */
enum tw_event_kind {
	TW_EV_STATE = 1,        /* inet_sock_set_state: old_state -> state */
	TW_EV_RETRANSMIT = 2,   /* a retransmission; detail = err when it failed locally */
	TW_EV_SEND_RESET = 3,   /* tcp_send_reset; detail = sk_rst_reason or TW_RST_REASON_UNKNOWN */
	TW_EV_RECV_RESET = 4,   /* tcp_receive_reset */
	TW_EV_ERROR = 5,        /* inet_sk_error_report; detail = sk_err */
	TW_EV_CONG_STATE = 6,   /* tcp_cong_state_set: old_state(ca) -> ca_state */
	TW_EV_KEEPALIVE = 7,    /* tcp_keepalive_timer ran and did something */
	TW_EV_DESTROY = 8,      /* tcp_destroy_sock: the socket is gone */
	TW_EV_PROBE0 = 9,       /* the zero-window probe timer ran (tcp_probe_timer): probes_out after it, 0 when probing ended */
	TW_EV_DROP = 10,        /* skb:kfree_skb of a troubled socket's packet; detail = skb_drop_reason, drops = how many */
	TW_EV_TIMEWAIT = 11,    /* a SYN or RST met a 4-tuple in TIME_WAIT (--all, 6.11+): see enum tw_timewait_seen */
	TW_EV_LIFECYCLE = 12,   /* --all: a struct lifecycle, the state changes the kernel half summarised (lifecycle.h) */
	TW_EV_KIND_MAX,         /* one past the last kind: Go's decoder keeps later kinds as they are (Kind.String names them kind(N)) */
};

/* Event flags. */
enum tw_event_flag {
	TW_F_OWNER_EXITING = 1 << 0, /* the owning task was exiting (PF_EXITING) */
	TW_F_REPLY_RESET = 1 << 1,   /* reset in reply to a received segment (skb != NULL) */
	TW_F_KA_PROBE = 1 << 2,      /* keepalive: a probe went out (probes_out grew) */
	TW_F_KA_KILLED = 1 << 3,     /* keepalive: the timer gave up and killed the socket */
	TW_F_KA_ANSWERED = 1 << 4,   /* keepalive: earlier probes were answered (probes_out back to 0) */
	TW_F_IN_KA_TIMER = 1 << 5,   /* emitted from inside tcp_keepalive_timer */
	TW_F_NO_SOCK = 1 << 6,       /* no full socket: tuple and netns come from the packet */
	TW_F_ORPHAN = 1 << 7,        /* no process holds the socket any more (SOCK_DEAD) */
	TW_F_FROM_TIMER = 1 << 8,    /* RETRANSMIT seen at the retransmission timer, not the tracepoint */
	TW_F_DROP_IN = 1 << 9,       /* DROP: a packet from the peer (else one this socket sent) */
	TW_F_DROP_ELSEWHERE = 1 << 10, /* DROP: in another network namespace of this kernel (a bridge, the node's firewall) */
	TW_F_NO_LOCAL_PORT = 1 << 11, /* SYN_SENT -> CLOSE before a local port was found: connect() got EADDRNOTAVAIL */
	TW_F_CLOSE_WAIT_STUCK = 1 << 12, /* the exposure scan found the socket stuck in CLOSE_WAIT (close_wait_stuck) */
	TW_F_LIFE_DESTROYED = 1 << 13, /* LIFECYCLE: sent at tcp_destroy_sock, which it stands for too */
	/* listeners (issue 19): */
	TW_F_DROP_NO_ROUTE6 = 1 << 14, /* DROP: freed by inet6_csk_xmit, its IPv6 route lookup failed (the kernel's reason: NOT_SPECIFIED) */
};

/* How the kernel half learned the owner it puts in pid/comm. */
enum tw_owner_source {
	TW_OWNER_NONE = 0,    /* not known in the kernel: user space looks it up */
	TW_OWNER_CONNECT = 1, /* the task that called connect() */
	TW_OWNER_LISTEN = 2,  /* the task that called listen() (listening sockets) */
	TW_OWNER_CLOSE = 3,   /* the task that closed or aborted it (or exited) */
	/* Never written by the kernel half: how user space named an owner the
	 * kernel could not (one enum, so Go has one OwnerSource). */
	TW_OWNER_PROCFS = 4,   /* the process holding its descriptor (/proc/PID/fd) */
	TW_OWNER_LISTENER = 5, /* the owner of the listener on its port: the holder could not be found */
};

/*
 * DROP with reason NETFILTER_DROP: the netfilter hook, inferred from the
 * packet's state (the kernel does not pass the hook to kfree_skb): an
 * outgoing packet has no device before routing output (OUTPUT) and one
 * after (POSTROUTING); an incoming one has no route before the routing
 * decision (PREROUTING) and one after (INPUT).
 */
enum tw_nf_hook {
	TW_NF_NONE = 0,
	TW_NF_PREROUTING = 1,
	TW_NF_INPUT = 2,
	TW_NF_OUTPUT = 3,
	TW_NF_POSTROUTING = 4,
};

/* `detail` of a send_reset when the kernel does not say why (before 6.10). */
enum tw_rst_reason {
	TW_RST_REASON_UNKNOWN = -1,
};

/* The kernel's TCP constants the record relies on; Go reads them from the
 * generated bindings, never from a copy. */
enum tw_tcp_limit {
	TW_TCP_RTO_MAX_MS = 120000, /* TCP_RTO_MAX: the RTO's cap unless icsk_rto_max (6.15+) lowers it */
};

struct event {
	__u64 ts_ns;            /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 cookie;           /* socket cookie (as in ss -e / sock_diag); 0 if never generated */
	__u64 first_seen_ns;    /* when tcpwatch first saw this socket; 0 unknown */
	__u8 saddr[16];         /* IPv4 in the first 4 bytes, or IPv6 */
	__u8 daddr[16];
	__u32 netns;            /* network namespace inode */
	__u32 pid;              /* owning process (tgid); 0 if unknown */
	__u8 comm[TW_COMM_LEN]; /* owning process name */
	__u32 inode;            /* socket inode ("socket:[N]" in /proc/PID/fd); 0 if no file */
	__u16 family;           /* AF_INET or AF_INET6 */
	__u16 sport;            /* host byte order */
	__u16 dport;            /* host byte order */
	__u16 flags;            /* enum tw_event_flag */
	__u8 kind;              /* enum tw_event_kind */
	__u8 state;             /* TCP state; for STATE the new one */
	__u8 old_state;         /* STATE: previous TCP state; CONG_STATE: previous ca_state */
	__u8 ca_state;          /* congestion state (icsk_ca_state); CONG_STATE: the new one */
	__u8 retransmits;       /* icsk_retransmits */
	__u8 backoff;           /* icsk_backoff */
	__u8 probes_out;        /* icsk_probes_out */
	__u8 keepalive_probes;  /* effective: per-socket or the netns sysctl */
	__u8 retries2;          /* netns tcp_retries2 */
	__u8 syn_retries;       /* effective: icsk_syn_retries or the netns tcp_syn_retries */
	__u8 orphan_retries;    /* netns tcp_orphan_retries (0 means 8 for a live peer) */
	__u8 syn_linear_timeouts; /* netns tcp_syn_linear_timeouts (6.18+), else 0 */
	__u8 keepalive_on;      /* SO_KEEPALIVE set */
	__u8 owner_source;      /* enum tw_owner_source */
	__u8 nf_hook;           /* DROP: enum tw_nf_hook */
	__u8 _pad;
	__s32 sk_err;
	__s32 sk_err_soft;
	__s32 detail;           /* see enum tw_event_kind */
	__u32 exit_code;        /* owner's task->exit_code when TW_F_OWNER_EXITING */
	__u32 rto_ms;           /* icsk_rto */
	__u32 rto_max_ms;       /* icsk_rto_max (6.15+) or TCP_RTO_MAX */
	__u32 srtt_us;          /* smoothed RTT */
	__u32 packets_out;      /* segments in flight */
	__u32 retrans_out;      /* retransmitted segments in flight */
	__u32 bytes_in_flight;  /* snd_nxt - snd_una */
	__u32 total_retrans;    /* retransmissions over the connection's life */
	__u32 keepalive_time_ms;  /* effective keepalive idle time */
	__u32 keepalive_intvl_ms; /* effective keepalive probe interval */
	__u32 user_timeout_ms;  /* TCP_USER_TIMEOUT, 0 if unset */
	__u32 ack_age_ms;       /* time since the peer last acknowledged anything */
	__u64 cgroup_id;        /* cgroup v2 id of the socket (sk_cgrp_data), 0 if none */
	__u32 snd_wnd;          /* the window the peer last advertised, bytes */
	__u32 notsent_bytes;    /* written by the application, not sent yet (write_seq - snd_nxt) */
	__u32 drops;            /* DROP: drops this record stands for (same reason, folded) */
	__u32 _pad2;
	/* thread (issue 17): the owner's thread, the task that connect()ed,
	 * listen()ed or closed the socket, by its own comm; `comm` names its
	 * process (the thread-group leader). Equal to comm when the leader
	 * acted, and written only where comm is. */
	__u8 thread[TW_COMM_LEN];
};

/*
 * TW_EV_TIMEWAIT (issue 20): what a SYN or an RST did to a 4-tuple this
 * side holds in TIME_WAIT, seen where tcp_v4_rcv()/tcp_v6_rcv() free the
 * segment (skb:kfree_skb, whose rx_sk is the timewait socket since 6.11).
 * A timewait socket has none of a connection's figures, so the record
 * reuses these fields:
 *   detail          enum tw_timewait_seen (the low byte) | its TW_TWS_F_* bits
 *   state           TCP_TIME_WAIT; old_state: tw_substate (TIME_WAIT, or FIN_WAIT2 for an orphan's)
 *   packets_out     the segment's sequence number
 *   retrans_out     tw_rcv_nxt: what the old connection expected next from the peer
 *   bytes_in_flight the segment's TSval (TW_TWS_F_SEG_TS)
 *   total_retrans   tw_ts_recent: the peer's last timestamp (TW_TWS_F_TW_TS)
 *   rto_ms          how long the TIME_WAIT still had to run (its timer), ms
 *   cookie          the old connection's socket cookie (the timewait socket keeps it)
 */
enum tw_timewait_seen {
	TW_TWS_SYN_ANSWERED = 1,   /* a SYN it did not accept: answered with the old connection's ACK (TCP_TW_ACK) */
	TW_TWS_SYN_UNANSWERED = 2, /* the same, the ACK held back by tcp_invalid_ratelimit */
	TW_TWS_RST_ENDED = 3,      /* an RST ended the TIME_WAIT (tcp_rfc1337=0: RFC 1337's assassination) */
	TW_TWS_RST_KEPT = 4,       /* an RST it ignored: tcp_rfc1337=1, or not at the expected sequence number */
	TW_TWS_WHAT = 0xff,        /* mask of the above in detail */
	TW_TWS_F_RFC1337 = 1 << 8, /* the namespace's tcp_rfc1337 was set */
	TW_TWS_F_SEG_TS = 1 << 9,  /* the segment carried a timestamp */
	TW_TWS_F_TW_TS = 1 << 10,  /* the TIME_WAIT keeps the peer's timestamps (tw_ts_recent_stamp != 0): PAWS applies */
};

/*
 * --all (lifecycle): a socket's state changes, summarised in the kernel
 * (lifecycle.h) and sent as one record instead of one each: at the
 * socket's destroy for a normal lifecycle, or earlier, as soon as
 * anything else about the socket is sent (a reset, an error, a
 * retransmission, a timer), so that what follows comes after the states
 * it followed. `e` (kind TW_EV_LIFECYCLE) holds the figures when it was
 * sent; the state changes came at at_ns[i], old_state[i] -> new_state[i].
 */
#define TW_LIFE_STEPS 8

struct lifecycle {
	struct event e;
	__u64 at_ns[TW_LIFE_STEPS];
	__u8 old_state[TW_LIFE_STEPS];
	__u8 new_state[TW_LIFE_STEPS];
	__u8 steps;             /* how many of the above hold a state change */
	__u8 _pad[7];
};

#endif /* TW_RECORD_H */
