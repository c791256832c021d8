//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The floor for tcpwatch's benchmark: empty programs on exactly the
 * tracepoints tcpwatch attaches (tracer.hooks()): the TCP and sock
 * tracepoints and the timer core's entry/exit, nothing on the send/receive
 * path. Whatever they cost is the least any tracer on these hooks can
 * cost; tcpwatch's own cost is reported against it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(floor_set_state) { return 0; }

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(floor_retransmit) { return 0; }

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(floor_send_reset) { return 0; }

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(floor_recv_reset) { return 0; }

SEC("tp_btf/inet_sk_error_report")
int BPF_PROG(floor_error) { return 0; }

SEC("tp_btf/tcp_cong_state_set")
int BPF_PROG(floor_cong_state) { return 0; }

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(floor_destroy) { return 0; }

SEC("tp_btf/timer_expire_entry")
int BPF_PROG(floor_timer_entry) { return 0; }

SEC("tp_btf/timer_expire_exit")
int BPF_PROG(floor_timer_exit) { return 0; }

SEC("tp_btf/kfree_skb")
int BPF_PROG(floor_drop) { return 0; }

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(floor_synack) { return 0; }
