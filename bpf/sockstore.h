/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The socket-local storage of the kernel half, in a header of its own:
 * the exposure iterator (exposure.bpf.c) declares the same map, and watch
 * mode hands it tcpwatch.bpf.c's (a map replacement at load), so the scan
 * can mark a socket stuck in CLOSE_WAIT notable.
 */
#ifndef TW_SOCKSTORE_H
#define TW_SOCKSTORE_H
#include "record.h"

enum tw_sock_flag {
	TW_SK_NOTABLE = 1 << 0, /* something happened that may become a narrative */
	TW_SK_EXITING = 1 << 1, /* closed by an exiting owner */
	TW_SK_CLOSE_WAIT = 1 << 2, /* stuck in CLOSE_WAIT: marked (and made notable) by the exposure scan */
	TW_SK_TROUBLED_END = 1 << 3, /* went to CLOSE marked troubled: its destroy is told (drops.h, troubled_at_close) */
};

/*
 * What tcpwatch remembers per socket (see sockinfo.h).
 */
struct sock_info {
	__u64 first_seen_ns;
	__u32 pid;
	__u32 exit_code;
	__u8 comm[TW_COMM_LEN];
	__u8 flags;        /* enum tw_sock_flag */
	__u8 owner_source; /* enum tw_owner_source */
	__u8 _pad[6];
	/*
	 * When an exposure scan (exposure.bpf.c) first found the socket in
	 * CLOSE_WAIT (bpf_ktime_get_ns); 0: never. Only the scan writes it.
	 */
	__u64 close_wait_seen_ns;
	/* The thread that acted when pid/comm were written (record.h, thread). */
	__u8 thread[TW_COMM_LEN];
};

/*
 * Socket-local storage: created by tw_set_state at listen, at connect with
 * emit_all, at a close by an exiting task, and by the
 * reset/error/retransmit programs (and a CLOSE with an error) when a
 * socket becomes notable, and by the exposure scan for a socket it finds
 * in CLOSE_WAIT (watch mode only: close_wait_stuck); read by every program that has
 * a trusted socket; deleted by the kernel with the socket. The timer
 * programs never read it: their socket pointer is not one the helper
 * accepts, and its layout is the kernel's business.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_info);
} sock_infos SEC(".maps");

#endif /* TW_SOCKSTORE_H */
