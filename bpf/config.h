/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the loader tells the programs before load: one struct in .rodata,
 * set from Go with spec.Variables["tw_cfg"].Set(bpf.TcpwatchTwConfig{...}).
 * The map is frozen at load, so the verifier knows every field and drops
 * the branches a setting turns off (emit_all = 0 costs nothing).
 */
#ifndef TW_CONFIG_H
#define TW_CONFIG_H

struct tw_config {
	/*
	 * With emit_all every event is a record: waking the reader for each
	 * costs more than the record. Records then go without a wakeup (the
	 * reader polls) unless the ring holds more than this many bytes.
	 * 0: always wake.
	 */
	__u64 lazy_wakeup_bytes;
	__u32 hz;           /* kernel CONFIG_HZ, for jiffies */
	__u32 filter_netns; /* network namespace inode; 0 = any */
	__u16 filter_port;  /* either side; 0 = any */
	__u8 emit_all;      /* --events / --all: send every event */
	__u8 summarize;     /* --all: with emit_all, a normal lifecycle's state changes in one record (lifecycle.h) */
	__u8 _pad[4];
	/*
	 * [start, end) of inet6_csk_xmit's code (/proc/kallsyms; 0 unknown):
	 * a TCP segment it frees is one whose IPv6 route lookup failed, and
	 * the kernel gives that kfree_skb no reason (NOT_SPECIFIED).
	 */
	__u64 v6_xmit_start;
	__u64 v6_xmit_end;
};

const volatile struct tw_config tw_cfg = { .hz = 250 };

#endif /* TW_CONFIG_H */
