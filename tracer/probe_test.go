package tracer

import (
	"slices"
	"strings"
	"testing"

	"github.com/tcpwatch/tcpwatch/bpf"
)

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
			// 6.17+ passes err: the variant that reads it is chosen, the
			// other removed; before, the two-argument one.
			want, unused := bpf.TcpwatchProgTwRetransmit, bpf.TcpwatchProgTwRetransmitErr
			if ki.tracepointParams("tcp_retransmit_skb") >= 3 {
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
