/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * One row of `tcpwatch exposure`: a TCP socket as the iterator found it,
 * with the settings that decide when its kernel would notice a silent
 * peer, read from the socket itself and from its namespace. Shared with Go
 * through bpf2go (-type tw_sock_row): naturally aligned, never packed.
 *
 * Times that the kernel keeps in jiffies are sent in jiffies (user space
 * knows HZ); the socket's own keepalive settings are sent raw, 0 meaning
 * "the namespace's sysctl", so user space can tell which one decided.
 */
#ifndef TW_EXPOSURE_H
#define TW_EXPOSURE_H

enum tw_row_flag {
	TW_ROW_FULL = 1 << 0,      /* a full tcp_sock: every field below is read */
	TW_ROW_KEEPALIVE = 1 << 1, /* SO_KEEPALIVE set */
	TW_ROW_ORPHAN = 1 << 2,    /* SOCK_DEAD: no process holds it */
	TW_ROW_RTO_MIN = 1 << 3,   /* icsk_rto_min exists on this kernel */
	TW_ROW_RTO_MAX = 1 << 4,   /* icsk_rto_max exists on this kernel (6.15+) */
	TW_ROW_SYS_RTO_MAX = 1 << 5, /* net.ipv4.tcp_rto_max_ms exists (6.15+) */
	TW_ROW_CLOSE_WAIT_STUCK = 1 << 6, /* in CLOSE_WAIT since a scan at least close_wait_after_ns ago: marked notable */
};

struct tw_sock_row {
	__u64 cookie;            /* socket cookie, as ss -e and tcpwatch's records */
	__u64 cgroup_id;         /* cgroup v2 id of the socket, 0 if none */
	__u8 saddr[16];          /* IPv4 in the first 4 bytes, or IPv6 */
	__u8 daddr[16];
	__u32 netns;             /* network namespace inode */
	__u32 inode;             /* socket inode, 0 if no file */
	__u32 uid;               /* sock_i_uid */
	__u16 family;
	__u16 sport;             /* host byte order */
	__u16 dport;
	__u16 flags;             /* enum tw_row_flag */
	__u8 state;              /* TCP state (TIME_WAIT and NEW_SYN_RECV included) */
	__u8 ca_state;
	__u8 retransmits;        /* icsk_retransmits */
	__u8 backoff;
	__u8 probes_out;
	__u8 sk_keepalive_probes; /* tp->keepalive_probes, 0 = sysctl */
	__u8 sk_syn_retries;     /* icsk_syn_retries, 0 = sysctl */
	__u8 net_keepalive_probes;
	__u8 net_retries2;
	__u8 net_orphan_retries;
	__u8 net_syn_retries;
	__u8 net_tw_reuse;
	__u32 sk_keepalive_time;  /* jiffies, 0 = sysctl */
	__u32 sk_keepalive_intvl; /* jiffies, 0 = sysctl */
	__u32 net_keepalive_time; /* jiffies */
	__u32 net_keepalive_intvl; /* jiffies */
	__u32 user_timeout_ms;   /* icsk_user_timeout, 0 unset */
	__u32 rto;               /* icsk_rto, jiffies */
	__u32 rto_min;           /* icsk_rto_min, jiffies (TW_ROW_RTO_MIN) */
	__u32 rto_max;           /* icsk_rto_max, jiffies (TW_ROW_RTO_MAX) */
	__u32 net_rto_max_ms;    /* tcp_rto_max_ms (TW_ROW_SYS_RTO_MAX) */
	__u32 srtt_us;
	__u32 packets_out;
	__u32 unacked_bytes;     /* snd_nxt - snd_una */
	__u32 unsent_bytes;      /* write_seq - snd_nxt */
	__u32 unread_bytes;      /* rcv_nxt - copied_seq: received, not read by the application */
	__u32 idle;              /* jiffies since the peer was last heard (the keepalive timer's measure) */
	__u32 since_send;        /* jiffies since data was last sent */
	__u32 since_ack;         /* jiffies since the peer last acknowledged anything */
	__u32 net_local_port_lo; /* ip_local_port_range */
	__u32 net_local_port_hi;
	__u32 net_fin_timeout;   /* tcp_fin_timeout, jiffies: how long an orphan waits in FIN_WAIT2 */
	__s32 linger2;           /* TCP_LINGER2, jiffies: 0 = sysctl, < 0 = reset at once */
	__u32 close_wait_ms;     /* with close_wait_after_ns: ms since the first scan that found it in CLOSE_WAIT */
};

#endif /* TW_EXPOSURE_H */
