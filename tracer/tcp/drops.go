package tcp

import (
	"fmt"
	"strings"
)

// DropReasons names the kernel's enum skb_drop_reason (kfree_skb's reason,
// 5.17+). The enum grows with every kernel and is not UAPI, so the names
// come from the running kernel's BTF; kernels without it in BTF have no
// reason on the tracepoint either.
type DropReasons map[int32]string

// Name is the reason as the kernel names it, without SKB_DROP_REASON_
// ("NETFILTER_DROP"), or "reason(N)" for a value the table lacks.
func (r DropReasons) Name(reason int32) string {
	if n, ok := r[reason]; ok {
		return n
	}
	return fmt.Sprintf("reason(%d)", reason)
}

// TrimDropReasonPrefix turns a BTF enumerator into the name tcpwatch shows.
func TrimDropReasonPrefix(s string) string {
	s = strings.TrimPrefix(s, "SKB_DROP_REASON_")
	return strings.TrimPrefix(s, "SKB_")
}

// DropWhere is the part of the host a drop reason points at, so the
// words can say which team to call: "netfilter" (this host's firewall,
// conntrack), "neighbour" (ARP/ND: the next hop does not answer),
// "route" (no route), "device" (the link is down, no carrier), "qdisc"
// (the queue discipline), "tcp" (the TCP stack rejected the segment:
// sequence, PAWS, window checks), "socket" (a socket filter, a full
// receive buffer), else "" (the reason alone says it).
func DropWhere(name string) string {
	switch {
	case name == "NETFILTER_DROP" || strings.HasPrefix(name, "IP_RPFILTER"):
		return "netfilter"
	case strings.HasPrefix(name, "NEIGH_"):
		return "neighbour"
	case name == "IP_OUTNOROUTES" || name == "IP_INNOROUTES":
		return "route"
	case name == "DEV_READY" || name == "DEV_HDR" || name == "FULL_RING" || name == "NO_TX_TARGET":
		return "device"
	case strings.HasPrefix(name, "QDISC_") || strings.HasPrefix(name, "FQ_") || name == "CAKE_FLOOD":
		return "qdisc"
	case strings.HasPrefix(name, "TCP_"):
		return "tcp"
	case strings.HasPrefix(name, "SOCKET_") || name == "PROTO_MEM":
		return "socket"
	}
	return ""
}
