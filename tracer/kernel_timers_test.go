package tracer

import (
	"testing"

	"github.com/cilium/ebpf/btf"
)

// The two layouts of the TCP timers: up to 6.18 the retransmission timer is
// icsk_retransmit_timer and the keepalive timer sk_timer; in 7.3 they swap
// places, each inside an anonymous union (as 7.3.4's BTF shows them).
func TestTimerMembersInsideAnonymousUnions(t *testing.T) {
	timer := &btf.Struct{Name: "timer_list", Size: 40}
	icsk73 := &btf.Struct{Name: "inet_connection_sock", Members: []btf.Member{
		{Name: "icsk_delack_timer", Type: timer},
		{Type: &btf.Union{Members: []btf.Member{{Name: "icsk_keepalive_timer", Type: timer}, {Name: "mptcp_tout_timer", Type: timer}}}},
		{Name: "icsk_rto", Type: &btf.Int{Size: 4}},
	}}
	sock73 := &btf.Struct{Name: "sock", Members: []btf.Member{
		{Type: &btf.Union{Members: []btf.Member{{Name: "sk_timer", Type: timer}, {Name: "tcp_retransmit_timer", Type: timer}}}},
	}}
	for _, tc := range []struct {
		members []btf.Member
		name    string
		want    bool
	}{
		{icsk73.Members, "icsk_keepalive_timer", true},
		{icsk73.Members, "icsk_retransmit_timer", false},
		{sock73.Members, "tcp_retransmit_timer", true},
		{sock73.Members, "sk_timer", true},
		{sock73.Members, "sk_state", false},
	} {
		if got := hasMember(tc.members, tc.name); got != tc.want {
			t.Errorf("hasMember(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// On the running kernel both timers are found, in the place the BPF side looks.
func TestTimerMembersOfThisKernel(t *testing.T) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatalf("no kernel BTF: %v", err)
	}
	ka := firstMember(spec, "inet_connection_sock.icsk_keepalive_timer", "sock.sk_timer")
	wr := firstMember(spec, "inet_connection_sock.icsk_retransmit_timer", "sock.tcp_retransmit_timer")
	if ka == "" || wr == "" {
		t.Fatalf("keepalive timer in %q, write timer in %q: one is unknown", ka, wr)
	}
}
