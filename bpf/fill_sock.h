/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The body of fill_tp() and fill_probed() (fill.h), included in both: each
 * record field filled from the socket, once. Not a header of its own
 * (no include guard): it expects e, sk, tp, icsk and net in scope, and
 * TW_RD(p, field), TW_RD_BITFIELD(p, field), TW_RD_ADDRS(e, sk) and
 * tw_cgroup_id(sk) defined by its includer.
 */
	e->family = TW_RD(sk, __sk_common.skc_family);
	/* inet_put_port() zeroes skc_num before the CLOSE tracepoint; inet_sport stays. */
	e->sport = TW_RD(sk, __sk_common.skc_num) ?: bpf_ntohs(TW_RD(tp, inet_conn.icsk_inet.inet_sport));
	e->dport = bpf_ntohs(TW_RD(sk, __sk_common.skc_dport));
	e->netns = TW_RD(net, ns.inum);
	e->state = TW_RD(sk, __sk_common.skc_state);
	TW_RD_ADDRS(e, sk);
	unsigned long flags = TW_RD(sk, __sk_common.skc_flags);
	e->keepalive_on = sock_flag_set(flags, bpf_core_enum_value(enum sock_flags, SOCK_KEEPOPEN));
	if (sock_flag_set(flags, bpf_core_enum_value(enum sock_flags, SOCK_DEAD)))
		e->flags |= TW_F_ORPHAN;
	/* The inode lives in struct socket_alloc around the struct socket the
	 * verifier knows: a probe read either way. */
	struct socket *so = TW_RD(sk, sk_socket);
	if (so)
		e->inode = BPF_CORE_READ((struct socket_alloc *)so, vfs_inode.i_ino);
	e->cgroup_id = tw_cgroup_id(sk);

	e->ca_state = TW_RD_BITFIELD(icsk, icsk_ca_state);
	e->retransmits = TW_RD(icsk, icsk_retransmits);
	e->backoff = TW_RD(icsk, icsk_backoff);
	e->probes_out = TW_RD(icsk, icsk_probes_out);
	e->rto_ms = jiffies_to_ms(TW_RD(icsk, icsk_rto));
	e->rto_max_ms = TW_TCP_RTO_MAX_MS;
	if (bpf_core_field_exists(struct inet_connection_sock, icsk_rto_max))
		e->rto_max_ms = jiffies_to_ms(TW_RD(icsk, icsk_rto_max)) ?: TW_TCP_RTO_MAX_MS;
	e->user_timeout_ms = TW_RD(icsk, icsk_user_timeout);
	e->sk_err = TW_RD(sk, sk_err);
	e->sk_err_soft = TW_RD(sk, sk_err_soft);
	e->srtt_us = TW_RD(tp, srtt_us) >> 3;
	e->packets_out = TW_RD(tp, packets_out);
	e->retrans_out = TW_RD(tp, retrans_out);
	e->bytes_in_flight = TW_RD(tp, snd_nxt) - TW_RD(tp, snd_una);
	e->total_retrans = TW_RD(tp, total_retrans);
	e->snd_wnd = TW_RD(tp, snd_wnd);
	e->notsent_bytes = TW_RD(tp, write_seq) - TW_RD(tp, snd_nxt);

	/* 0 in the socket means "the namespace's sysctl" (keepalive_*_when()). */
	__u32 ka_time = TW_RD(tp, keepalive_time) ?: TW_RD(net, ipv4.sysctl_tcp_keepalive_time);
	__u32 ka_intvl = TW_RD(tp, keepalive_intvl) ?: TW_RD(net, ipv4.sysctl_tcp_keepalive_intvl);
	e->keepalive_time_ms = jiffies_to_ms(ka_time);
	e->keepalive_intvl_ms = jiffies_to_ms(ka_intvl);
	e->keepalive_probes = TW_RD(tp, keepalive_probes) ?: TW_RD(net, ipv4.sysctl_tcp_keepalive_probes);
	e->retries2 = TW_RD(net, ipv4.sysctl_tcp_retries2);
	e->syn_retries = TW_RD(icsk, icsk_syn_retries) ?: TW_RD(net, ipv4.sysctl_tcp_syn_retries);
	e->orphan_retries = TW_RD(net, ipv4.sysctl_tcp_orphan_retries);
	if (bpf_core_field_exists(struct netns_ipv4, sysctl_tcp_syn_linear_timeouts))
		e->syn_linear_timeouts = TW_RD(net, ipv4.sysctl_tcp_syn_linear_timeouts);
	/* Nothing was ever acknowledged before the handshake completes. */
	__u32 rcv = TW_RD(tp, rcv_tstamp);
	if (rcv && e->state != TCP_SYN_SENT && e->state != TCP_LISTEN)
		e->ack_age_ms = jiffies_to_ms((__u32)bpf_jiffies64() - rcv);
