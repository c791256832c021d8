/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the kernel half, with who writes, reads and deletes it.
 */
#ifndef TW_MAPS_H
#define TW_MAPS_H

#include "record.h"

#ifndef READ_ONCE
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
#endif
#define EEXIST 17 /* a map insert with BPF_NOEXIST found the key (uapi errno) */

/*
 * Records to user space. Written (reserve/submit) by every program, read
 * by tracer.Read; resized by the loader (--ring-size).
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

#include "counters.h"
#include "sockstore.h"


/*
 * Who called connect(), without socket-local storage: creating storage
 * costs about 1 us per connection (allocation at connect, an RCU free at
 * destruction) and most connections never become notable. Keyed by the
 * socket cookie, which tw_set_state generates at connect (every
 * established socket gets one anyway: the timer programs read it), in a
 * direct-mapped array: slot = cookie % TW_CONNECT_SLOTS. Cookies are
 * handed out in sequence, so a slot is overwritten after that many more
 * sockets got a cookie (65536: minutes on a busy host); a socket that
 * becomes notable later than that has no connect owner in the kernel and
 * user space names it from /proc. Written by tw_set_state at SYN_SENT
 * (default mode); read by sock_info_create when a socket's storage is
 * made (it becomes notable, or is closed by an exiting task). Never
 * deleted (array). `cookie` is cleared before and set after the other
 * fields, and a reader checks it before and after copying them: a slot
 * being rewritten on another CPU is not read as the old socket's. The
 * order holds on every architecture because `cookie` is only touched
 * with fully ordered atomic instructions (sockinfo.h says how).
 */
#define TW_CONNECT_SLOTS (1 << 16)

struct connect_owner {
	__u64 cookie; /* 0: empty or being written */
	__u64 ts_ns;  /* bpf_ktime_get_ns() at connect */
	__u8 comm[TW_COMM_LEN];   /* 8-byte aligned: owner_names stores words */
	__u8 thread[TW_COMM_LEN]; /* the connecting thread's own comm */
	__u32 pid;
	__u8 _pad[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TW_CONNECT_SLOTS);
	__type(key, __u32);
	__type(value, struct connect_owner);
} connect_owners SEC(".maps");

/*
 * icsk_probes_out after the keepalive timer last ran, keyed by the socket's
 * address (its cookie may be 0: nobody asked for it before tcpwatch
 * started). "The peer answered our probes" shows as a drop to 0 at the
 * next run. Written by tw_timer_exit for sockets whose probes went out;
 * deleted by tw_timer_exit when probing ends (answered or killed), and by
 * tw_destroy_sock while any entry exists (trouble_gate.ka_live: most
 * sockets have SO_KEEPALIVE, Go sets it by default, and a delete for each
 * cost ~200 ns per socket destroyed; with no probe outstanding on the host
 * a destroy costs one load). The value holds the cookie: an address reused
 * by a later socket does not match it and reads as no entry.
 *
 * A plain hash, not an LRU: an LRU pushes out an entry of a socket still
 * probing without a word, and the peer's answer to that probe then goes
 * untold. Since every entry is deleted at its socket's end, none is left
 * to pin memory; a full map refuses the insert, and tw_timer_exit counts
 * it (TW_CNT_KA_FULL).
 */
struct ka_last {
	__u64 cookie;
	__u8 probes_out;
	__u8 _pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, __u64);
	__type(value, struct ka_last);
} ka_probes SEC(".maps");

enum tw_window_kind {
	TW_WIN_KEEPALIVE = 1, /* tcp_keepalive_timer */
	TW_WIN_WRITE = 2,     /* tcp_write_timer (retransmission timer) */
};

/*
 * One TCP timer's entry/exit window on this CPU. Timer callbacks do not
 * nest on a CPU, so one slot per CPU is enough. Written by tw_timer_entry
 * for the two TCP timers only; marked by tw_set_state (killed),
 * tw_retransmit* (rtx_seen) inside the window; read and closed by
 * tw_timer_exit. Never deleted (array).
 */
struct tw_window {
	__u64 timer;  /* the timer_list being run; 0 when no window is open */
	__u64 sk;     /* the socket it belongs to */
	__u8 kind;    /* enum tw_window_kind */
	__u8 killed;  /* the socket went to CLOSE inside the window */
	__u8 rtx_seen; /* tcp_retransmit_skb fired for it inside the window */
	__u8 before;  /* at entry: icsk_probes_out (keepalive), icsk_retransmits (write) */
	__u8 have_entry; /* entry holds the figures read at entry */
	__u8 backoff_before; /* write: icsk_backoff at entry */
	__u8 pending;  /* write: icsk_pending at entry, the event that expired (ICSK_TIME_*) */
	__u8 probes_before; /* write: icsk_probes_out at entry */
	__u32 rto_before; /* write: icsk_rto at entry (jiffies): the RTO that expired */
	__u32 _pad2;
	struct event entry; /* for a kill: read at entry, the socket may be gone at exit */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tw_window);
} tw_windows SEC(".maps");

/*
 * A connection's 4-tuple as this host sees it (local first), in its
 * network namespace: the key of the troubled map, so that a dropped
 * packet, which may carry no socket, finds its connection from its
 * headers.
 */
struct tw_tuple {
	__u32 netns;
	__u16 family;
	__u16 lport; /* host byte order */
	__u16 rport;
	__u16 _pad;
	__u8 laddr[16]; /* IPv4 in the first 4 bytes */
	__u8 raddr[16];
};

/*
 * A connection in trouble, whose dropped packets tw_drop tells. Written
 * (marked) by write_timer_entry when an RTO or a zero-window probe
 * expires, by handle_retransmit for an RTO or SYN retransmission, and by
 * keepalive_exit when a probe goes out; read by tw_drop for every dropped
 * TCP packet (everything else is discarded there, before any ring
 * reservation); deleted by tw_cong_state when the outage ends (Loss ->
 * Open), by tw_set_state at every socket's move to CLOSE while any entry
 * exists (trouble_gate.troubled_live; drops.h, troubled_at_close: the
 * socket still has its 4-tuple then, not always at its destroy), and by
 * tw_drop when the last mark is older
 * than TW_TROUBLE_TTL_NS (a probe episode ends with no event: the window
 * opened). The cookie tells a later socket on the same 4-tuple apart.
 *
 * A plain hash, not an LRU: an LRU pushes out the least recently marked
 * entry without a word when full, and that connection's drops would then
 * go untold while it is still in trouble. Every entry is deleted at its
 * socket's end at the latest, so none is left to pin memory (one a race
 * leaves behind at the move to CLOSE goes at the destroy: drops.h,
 * troubled_forget), and a full map (more connections in trouble at once
 * than it holds) refuses the insert, which mark_troubled counts
 * (TW_CNT_TROUBLED_FULL).
 */
#define TW_TROUBLE_TTL_NS (240ULL * 1000000000ULL) /* two TCP_RTO_MAX: every episode's timer runs more often */
#define TW_DROP_FOLD_NS (10ULL * 1000000ULL)

struct troubled {
	__u64 cookie;
	__u64 marked_ns;    /* the last timer expiry or retransmission that said so */
	__u64 last_emit_ns; /* the last DROP record */
	__u32 folded;       /* drops of the last record's kind since it, not sent yet */
	__s32 reason;       /* the last record's kind: reason, direction, hook */
	__u16 flags;
	__u8 nf_hook;
	__u8 _pad[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, struct tw_tuple);
	__type(value, struct troubled);
} troubled SEC(".maps");

/*
 * The prefilter tw_drop reads before it parses a packet: when anything
 * was last marked (0: never), and one bit per local port that a troubled
 * connection uses. A drop on a host with no connection in trouble for
 * TW_TROUBLE_TTL_NS costs two loads; one whose ports are not marked costs
 * the header reads and one bit test, no hash lookup. Bits are set by
 * mark_troubled and never cleared (a port stays a candidate: the hash
 * lookup decides), and all of it is moot once nothing was marked for the
 * TTL. Written by mark_troubled, read by tw_drop; never deleted (array).
 * It also counts the entries of troubled and ka_probes (below).
 */
#define TW_PORT_WORDS (65536 / 64)

struct trouble_gate {
	__u64 last_mark_ns;
	__u64 ports[TW_PORT_WORDS];
	/*
	 * The entries of troubled and ka_probes, counted as they are inserted
	 * and deleted (atomic adds, a successful insert or delete only): a
	 * socket's move to CLOSE (troubled) and its destroy (ka_probes) look
	 * for its entry only while some exist, so a host with nothing in
	 * trouble pays one load each.
	 */
	__u64 troubled_live;
	__u64 ka_live;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trouble_gate);
} trouble_gate SEC(".maps");

#endif /* TW_MAPS_H */
