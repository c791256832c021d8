package tracer

import (
	"slices"
	"strings"
	"testing"

	"github.com/tcpwatch/tcpwatch/bpf"
)

// The parameter counts the choice rests on, for tracepoints whose
// prototypes every supported kernel shares (include/trace/events/sock.h,
// tcp.h, timer.h), and one the kernel does not have.
func TestTracepointParams(t *testing.T) {
	ki, err := ProbeKernel("")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{
		"inet_sock_set_state":    3, // sk, oldstate, newstate
		"tcp_receive_reset":      1, // sk
		"inet_sk_error_report":   1, // sk
		"tcp_destroy_sock":       1, // sk
		"timer_expire_exit":      1, // timer
		"tcp_no_such_tracepoint": -1,
	} {
		if got := ki.tracepointParams(name); got != want {
			t.Errorf("tracepointParams(%s) = %d, want %d", name, got, want)
		}
	}
}

// A hook whose tracepoint the kernel lacks is dropped before load, with a
// reason and what it costs; a required one is an error.
func TestChooseProgramsDropsMissingHooks(t *testing.T) {
	ki, err := ProbeKernel("") // the kernel's BTF is readable without root

	if err != nil {
		t.Fatal(err)
	}
	spec, err := bpf.LoadTcpwatch()
	if err != nil {
		t.Fatal(err)
	}
	tr := &Tracer{Kernel: ki, Hooks: hooks()}
	for _, h := range tr.Hooks {
		if h.Name == "tcp_cong_state_set" {
			h.Tracepoints = []string{"tcp:tcp_no_such_tracepoint"}
		}
	}
	if err := tr.choosePrograms(spec); err != nil {
		t.Fatal(err)
	}
	for _, h := range tr.Hooks {
		switch h.Name {
		case "tcp_cong_state_set":
			if len(h.Chosen) != 0 || !strings.Contains(h.Reason, "tcp_no_such_tracepoint") || !strings.Contains(h.Loses, "recovered") {
				t.Errorf("missing hook: programs %q reason %q loses %q", h.Chosen, h.Reason, h.Loses)
			}
			if _, ok := spec.Programs[bpf.TcpwatchProgTwCongState]; ok {
				t.Error("the program of a missing hook is still in the spec")
			}
		case "tcp_retransmit_skb":
			// 6.17 added err to the tracepoint: from then the variant
			// that reads it is chosen, the other removed; before, the
			// two-argument one. Decided by the release, not by the
			// parameter count choosePrograms itself reads.
			want, unused := bpf.TcpwatchProgTwRetransmit, bpf.TcpwatchProgTwRetransmitErr
			if !versionLess(ki.Release, "6.17") {
				want, unused = unused, want
			}
			if !slices.Equal(h.Chosen, []string{want}) {
				t.Errorf("retransmit variant %q, want %s", h.Chosen, want)
			}
			if _, ok := spec.Programs[unused]; ok {
				t.Error("the unused retransmit variant is still in the spec")
			}
		}
	}

	spec, _ = bpf.LoadTcpwatch()
	tr = &Tracer{Kernel: ki, Hooks: hooks()}
	tr.Hooks[0].Tracepoints = []string{"sock:no_such_state_tracepoint"}
	if err := tr.choosePrograms(spec); err == nil || !strings.Contains(err.Error(), "no_such_state_tracepoint") {
		t.Errorf("a missing required hook gave %v", err)
	}
}
