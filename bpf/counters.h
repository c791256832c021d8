/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel half's counters, in a header of their own: the exposure
 * iterator (exposure.bpf.c) declares the same map, and watch mode hands
 * it tcpwatch.bpf.c's, so a socket storage it cannot make is counted with
 * the others.
 */
#ifndef TW_COUNTERS_H
#define TW_COUNTERS_H

enum tw_counter {
	TW_CNT_LOST = 0, /* ring buffer full: record dropped */
	TW_CNT_DROPS_SEEN = 1,   /* tw_drop runs for an IP packet while some connection is in trouble */
	TW_CNT_DROPS_KEPT = 2,   /* ... of which belonged to a troubled connection */
	/*
	 * Skips: what the kernel half would have kept or sent but could not,
	 * for want of room. Each loses something user space would have told.
	 */
	TW_CNT_NO_STORAGE = 3,   /* a socket's storage could not be made (sock_info_create): its later records may not be sent */
	TW_CNT_TROUBLED_FULL = 4, /* a connection in trouble not marked: troubled was full, its drops go untold */
	TW_CNT_KA_FULL = 5,      /* a keepalive probe not remembered: ka_probes was full, an answer to it goes untold */
	TW_CNT_SYNACK_FULL = 6,  /* a listener's SYN-ACK retransmission not counted: synack_listeners was full */
	TW_CNT_MAX,
};

/*
 * Per-CPU counters. Incremented by every program when the ring is full or
 * a skip happens (enum tw_counter), and by the exposure iterator in watch
 * mode (a map replacement at load, as sock_infos); read (summed) by
 * tracer.Losses and tracer.DropPath; never deleted (array).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TW_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);
	if (v)
		*v += 1;
}

#endif /* TW_COUNTERS_H */
