package bpf

import (
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// One object, built with -target bpfel from one vmlinux.h (amd64's), serves
// amd64 and arm64 (make release; the arm64 kernel matrix runs it). That
// holds while nothing in it depends on the architecture: every program is
// tp_btf, whose arguments are the tracepoint's own (BPF_PROG reads them as
// u64 slots), never a struct pt_regs, whose layout is per architecture;
// every kernel struct is read through CO-RE (vmlinux.h's
// preserve_access_index), relocated against the running kernel's BTF. A
// kprobe or a PT_REGS_* accessor would need per-architecture headers and
// objects (__TARGET_ARCH_x86/arm64): clang's bpf target defines neither,
// so bpf_tracing.h refuses PT_REGS_* at compile time, and this test
// refuses the rest.
func TestObjectIsArchitectureNeutral(t *testing.T) {
	spec, err := LoadTcpwatch()
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Programs) == 0 {
		t.Fatal("no programs in the object")
	}
	for name, p := range spec.Programs {
		if p.Type != ebpf.Tracing || p.AttachType != ebpf.AttachTraceRawTp {
			t.Errorf("%s: %s/%s (section %s): only tp_btf programs are architecture-neutral", name, p.Type, p.AttachType, p.SectionName)
		}
	}
	// The types whose layout differs between architectures may be in the
	// object's BTF (task_struct holds a thread_struct; pt_regs is declared)
	// but nothing may read them: no CO-RE relocation starts from one.
	archTypes := map[string]bool{"pt_regs": true, "user_pt_regs": true, "thread_struct": true, "cpu_context": true, "thread_info": true}
	root := regexp.MustCompile(`^CORERelocation\([a-z_0-9]+, [A-Za-z]+:"([^"]+)"`)
	relocated, roots := 0, map[string]bool{}
	for name, p := range spec.Programs {
		for _, ins := range p.Instructions {
			r := btf.CORERelocationMetadata(&ins)
			if r == nil {
				continue
			}
			relocated++
			m := root.FindStringSubmatch(r.String())
			if m == nil {
				t.Errorf("%s: %s: no root type", name, r)
				continue
			}
			roots[m[1]] = true
			if archTypes[m[1]] {
				t.Errorf("%s: %s reads a type whose layout differs between architectures", name, r)
			}
		}
	}
	if relocated == 0 {
		t.Error("no CO-RE relocation in the object: field offsets are the build machine's")
	}
	t.Logf("%d programs, all tp_btf; %d CO-RE relocations from %s", len(spec.Programs), relocated, strings.Join(slices.Sorted(maps.Keys(roots)), " "))
}
