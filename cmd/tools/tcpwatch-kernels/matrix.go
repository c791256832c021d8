package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// Expect is lab/kernels/expect.json: what may differ, on which kernels, and
// why. Anything not listed must match the scenario's own expectation (and
// every hook must attach, every test pass) on every kernel.
type Expect struct {
	Comment string  `json:"comment,omitempty"`
	Allow   []Allow `json:"allow"`
}

// Allow is one allowed difference on kernels with Min <= version < Below
// (either may be empty). Exactly one of Hook, Scenario, Test is set.
type Allow struct {
	Min   string `json:"min,omitempty"`
	Below string `json:"below,omitempty"`
	Hook  string `json:"hook,omitempty"` // e.g. sock:sock_send_length may be MISSING
	// Scenario may end not as expected; with Verdicts, only with exactly
	// these verdicts per host; with Missing, only with expectations
	// among these unmet (the lab's list, where "unexpected ..." is a
	// forbidden verdict or notice told): a kernel that cannot show
	// something must not make tcpwatch say something else instead.
	Scenario string              `json:"scenario,omitempty"`
	Verdicts map[string][]string `json:"verdicts,omitempty"`
	Missing  []string            `json:"missing,omitempty"`
	// Test (package path, e.g. tracer) may fail in Name (a test or subtest).
	Test string `json:"test,omitempty"`
	Name string `json:"name,omitempty"`
	// Refused marks kernels tcpwatch does not run on: the guest runs only
	// check, which must fail with a message containing this text.
	Refused string `json:"refused,omitempty"`
	Why     string `json:"why"`
}

// refusal is the Allow saying that tcpwatch refuses kernel k, if any.
func (e *Expect) refusal(k *Kernel) *Allow {
	for i := range e.Allow {
		if e.Allow[i].Refused != "" && e.Allow[i].covers(k) {
			return &e.Allow[i]
		}
	}
	return nil
}

func loadExpect(path string) (*Expect, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var e Expect
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	for i, a := range e.Allow {
		n := 0
		for _, s := range []string{a.Hook, a.Scenario, a.Test, a.Refused} {
			if s != "" {
				n++
			}
		}
		if n != 1 || a.Why == "" {
			return nil, fmt.Errorf("%s: allow[%d] needs exactly one of hook, scenario, test, refused, and a why", path, i)
		}
	}
	return &e, nil
}

// upstream is the kernel version of a Debian version: 6.1.192-2 -> [6 1 192].
func upstream(v string) []int {
	v, _, _ = strings.Cut(v, "-")
	v, _, _ = strings.Cut(v, "+")
	v, _, _ = strings.Cut(v, "~")
	var out []int
	for _, p := range strings.Split(v, ".") {
		n, _ := strconv.Atoi(p)
		out = append(out, n)
	}
	return out
}

func versionLess(a, b []int) bool {
	for i := 0; i < max(len(a), len(b)); i++ {
		x, y := 0, 0
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func (a Allow) covers(k *Kernel) bool {
	v := upstream(k.Version)
	if a.Min != "" && versionLess(v, upstream(a.Min)) {
		return false
	}
	if a.Below != "" && !versionLess(v, upstream(a.Below)) {
		return false
	}
	return true
}

// compare fills each result's Diffs and Allowed; true when nothing differs.
func compare(results []*KernelResult, e *Expect) bool {
	ok := true
	for _, r := range results {
		diff := func(format string, args ...any) { r.Diffs = append(r.Diffs, fmt.Sprintf(format, args...)) }
		allowed := func(match func(Allow) bool) *Allow {
			for i := range e.Allow {
				if e.Allow[i].covers(r.Kernel) && match(e.Allow[i]) {
					return &e.Allow[i]
				}
			}
			return nil
		}
		if !r.Done {
			diff("the guest did not finish its plan (crash, panic or timeout): see its log")
		}
		for _, m := range r.Modules {
			diff("module %s did not load", m)
		}
		if a := e.refusal(r.Kernel); a != nil {
			stderr := ""
			if r.Check != nil {
				stderr = strings.Join(r.Check.Stderr, " / ")
			}
			switch {
			case r.Check == nil:
				diff("check did not run, and it should refuse this kernel")
			case r.Check.RC == 0:
				diff("check succeeded on a kernel tcpwatch should refuse (%s)", a.Why)
			case !strings.Contains(stderr, a.Refused):
				diff("check failed without saying %q: %s", a.Refused, stderr)
			default:
				r.Allowed = append(r.Allowed, fmt.Sprintf("refused, as it must be: %s", a.Why))
			}
		} else if r.Check != nil {
			if r.Check.RC != 0 {
				diff("check exited %d: %s", r.Check.RC, strings.Join(r.Check.Stderr, " / "))
			}
			for _, h := range r.Hooks {
				if h.Status != "ok" {
					if a := allowed(func(a Allow) bool { return a.Hook == h.Name }); a != nil {
						r.Allowed = append(r.Allowed, fmt.Sprintf("hook %s missing: %s", h.Name, a.Why))
					} else {
						diff("hook %s MISSING: %s", h.Name, h.Detail)
					}
				}
			}
		}
		if r.LabInTests {
			// Every listed scenario must have been told by TestScenarios.
			for _, name := range r.Listed {
				if _, ok := r.Lab[name]; !ok {
					diff("scenario %s: the lab's TestScenarios told no result for it (see test lab)", name)
				}
			}
		}
		for _, name := range sortedKeys(r.Lab) {
			lr := r.Lab[name]
			if lr.OK && lr.RC == 0 {
				continue
			}
			a := allowed(func(a Allow) bool {
				return a.Scenario == name && (a.Verdicts == nil || reflect.DeepEqual(normalize(a.Verdicts), normalize(lr.Verdicts))) &&
					(a.Missing == nil || !slices.ContainsFunc(lr.Missing, func(m string) bool { return !slices.Contains(a.Missing, m) }))
			})
			switch {
			case a != nil && lr.HaveResult:
				r.Allowed = append(r.Allowed, fmt.Sprintf("scenario %s: %s", name, a.Why))
			case !lr.HaveResult:
				diff("scenario %s: no lab_result (rc=%d): %s", name, lr.RC, strings.Join(lr.Stderr, " / "))
			default:
				diff("scenario %s: verdicts %s, expected %s (missing: %s)", name, verdictString(lr.Verdicts), verdictString(lr.Expected), strings.Join(lr.Missing, ", "))
			}
		}
		for _, pkg := range sortedKeys(r.Tests) {
			tr := r.Tests[pkg]
			for _, name := range tr.Failed {
				if a := allowed(func(a Allow) bool {
					return a.Test == pkg && (a.Name == name || strings.HasPrefix(a.Name, name+"/") || strings.HasPrefix(name, a.Name+"/"))
				}); a != nil {
					r.Allowed = append(r.Allowed, fmt.Sprintf("test %s %s: %s", pkg, name, a.Why))
					continue
				}
				diff("test %s: %s failed: %s", pkg, name, firstOr(head(tr.Key[name], 3), "(no log line)"))
			}
			if tr.RC != 0 && len(tr.Failed) == 0 {
				diff("test %s: exit %d without a failed test (crash or timeout): %s", pkg, tr.RC, strings.Join(tr.Tail, " / "))
			}
		}
		if len(r.Diffs) > 0 {
			ok = false
		}
	}
	return ok
}

func normalize(m map[string][]string) map[string][]string {
	out := map[string][]string{}
	for k, v := range m {
		if len(v) > 0 {
			out[k] = v
		}
	}
	return out
}

func head(l []string, n int) []string {
	if len(l) > n {
		return append(l[:n:n], fmt.Sprintf("(%d more)", len(l)-n))
	}
	return l
}

func firstOr(l []string, def string) string {
	if len(l) == 0 {
		return def
	}
	return strings.Join(l, " / ")
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func verdictString(m map[string][]string) string {
	if len(normalize(m)) == 0 {
		return "none"
	}
	var parts []string
	for _, h := range sortedKeys(m) {
		if len(m[h]) > 0 {
			parts = append(parts, h+": "+strings.Join(m[h], ", "))
		}
	}
	return strings.Join(parts, "; ")
}

const howToRun = `### How to run

    make test-kernels                           # 5.10, 6.1, 6.12 and the newest kernel Debian serves
    make test-kernels KERNELS="5.10 6.1 newest" # what CI runs
    make test-kernels KERNELS=6.12 STEPS=check,lab SCENARIOS="cable-pull cable-replug"
    go run -C cmd/tools ./tcpwatch-kernels -kernels 6.1 -steps tests -tests "tracer lab/netlab" -smp 1
    go run -C cmd/tools ./tcpwatch-kernels -kernels 6.1 -steps tests -tests lab -run 'TestScenarios/^cable-pull$' -count 10
    go run -C cmd/tools ./tcpwatch-kernels -report-only   # rebuild this file from the last logs
    make test-kernels ARCH=arm64 KERNELS="6.1 newest" STEPS=check,lab   # docs/kernels-arm64.md

Needs root (apt, and the privileged tests inside the guest run as the guest's root).
It installs qemu-system-x86 and busybox-static on the host if missing, and adds the apt
suites that carry the kernels (bookworm-backports, trixie, trixie-updates,
trixie-backports, bullseye) from the mirror the machine already uses, in
/etc/apt/sources.list.d/tcpwatch-kernels.sources, pinned to priority 1 by
/etc/apt/preferences.d/tcpwatch-kernels so they never upgrade the host.

Per kernel it downloads linux-image-ARCH's kernel packages of the chosen version
(apt-get download, 70–110 MB each) into /var/cache/tcpwatch-kernels/debs and unpacks
them (dpkg -x, never installed) into /var/cache/tcpwatch-kernels/VERSION. It builds a
static tcpwatch and a static test binary for each package whose tests need the real
kernel (those whose tests call testkit.RequirePrivileged), and a busybox initramfs per kernel with
those binaries and the modules the lab needs (veth, bridge, nf_tables, nft_numgen,
nft_meta_bridge, inet_diag, tcp_diag, with their dependencies from each module's
modinfo) under build/kernels/. The guest (qemu -accel tcg,thread=single, -cpu max) runs
` + "`tcpwatch check`" + `, ` + "`tcpwatch lab run NAME -o json`" + ` for every scenario that
` + "`tcpwatch lab list`" + ` shows, and every test binary with -test.v (CI=true: privileged
tests fail rather than skip), then powers off. When it runs the lab's test package too
(STEPS with both lab and tests, no -scenarios, -run or -count), the scenarios run once,
in the lab's TestScenarios, which checks more (one story per connection, the
applications' errors, nothing left behind) and prints each one's lab_result; the lab
step then only lists them, and the matrix reads those results as it reads lab run's
(a 6.1 guest on this shared 2-core machine: 2,104 s with the scenarios run twice, the
lab step's 701 s of it; 984 s with them run once, 484 s of its 968 s of tests). The raw serial log of each guest stays in
build/kernels/guest-RELEASE.log. Allowed differences are in lab/kernels/expect.json (per
kernel version range, with the reason); any other difference fails the run (exit 1). The
last line is "kernels: N passed, N failed". A kernel older than tcpwatch's minimum (6.1)
is in the matrix to show that tcpwatch refuses it plainly: its guest runs only check,
which must fail with the sentence expect.json names.

The guest's two CPUs run on one host thread (thread=single). With one thread per
CPU (qemu's default multi-threaded TCG, qemu 7.2 here), the 6.12 and 7.3 guests
twice died of an int3 oops in call_timer_fn while a tracepoint was detached: the
kernel had patched the site back (text_poke), yet a CPU still ran the old int3.
Real hardware does not do that; a single translation thread cannot. It costs no
time here: the guest mostly waits on TCP timers (on 7.3 the lab tests took 173–187 s
with one thread, 181–242 s with two).

arm64 (-arch arm64, make test-kernels ARCH=arm64; its matrix is
docs/kernels-arm64.md, its build build/kernels-arm64/): Debian's arm64
kernels and busybox-static (apt-get -o APT::Architectures::=arm64: the
host's dpkg does not gain the architecture), a static GOARCH=arm64
tcpwatch, booted by qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on
(TCG, one thread; a zboot EFI image is unpacked first). The guest links
busybox's applets itself (the host cannot run an arm64 busybox --list).
One BPF object serves both architectures: bpf2go builds it once for
bpfel from amd64's vmlinux.h, and nothing in it depends on the
architecture: every program is tp_btf (the tracepoint's arguments, no
struct pt_regs, whose layout is per architecture) and every kernel struct
is read through CO-RE relocations against the running kernel's BTF
(bpf/arch_test.go refuses a kprobe or a read of a per-architecture type;
clang's bpf target defines no __TARGET_ARCH, so PT_REGS_* would not
compile). The arm64 guests running check and the lab are the proof. A
6.1 arm64 guest took 232-242 s for check and all 24 scenarios, a 7.3 one 349 s.

Time (2-core machine, -smp 2, TCG, one kernel at a time): the first run fetches about
340 MB of packages in seconds and builds the binaries in about a minute; a guest then
takes about 16 minutes (6.1: 984 s, of which boot and modules 10 s, check 4 s, the privileged
test packages 968 s, the 42 lab scenarios, v4 and v6, 484 s of those in the lab's TestScenarios);
5.10's check-only guest 10–15 s. CI's subset (KERNELS="5.10 6.1 newest"), all steps, with the arm64 step and the normal
suite: 3,785 s of CI's 5,400 when the amd64 guests still ran every scenario twice.
`

// matrixMark ends the hand-written part of docs/kernels.md (what each
// kernel adds, the minimum and why): writeMatrix keeps everything up to it
// and rewrites only what follows.
const matrixMark = "<!-- the matrix below is written by make test-kernels (cmd/tools/tcpwatch-kernels): do not edit it by hand -->\n"

func writeMatrix(path string, results []*KernelResult, e *Expect) error {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	prose, err := handWritten(path)
	if err != nil {
		return err
	}
	b.WriteString(prose)
	w("## Kernel matrix\n\n")
	w("Written by `make test-kernels` (cmd/tools/tcpwatch-kernels) on %s: tcpwatch's check, lab scenarios and privileged tests inside Debian's own kernels under qemu. Do not edit by hand.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	w("| kernel | Debian packages | from | guest | wall time | result |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		res := "as expected"
		if len(r.Diffs) > 0 {
			res = fmt.Sprintf("**%d differences**", len(r.Diffs))
		}
		w("| %s | %s | %s | %s | %.0f s | %s |\n", r.Kernel.Release, strings.Join(r.Kernel.Packages, "<br>"), r.Kernel.Suite, r.Guest, r.Wall, res)
	}
	header := func(first string) {
		w("| %s |", first)
		for _, r := range results {
			w(" %s |", r.Kernel.Release)
		}
		w("\n|---|")
		for range results {
			w("---|")
		}
		w("\n")
	}
	// Hooks.
	hooks := []string{}
	seen := map[string]bool{}
	for _, r := range results {
		for _, h := range r.Hooks {
			if !seen[h.Name] {
				seen[h.Name] = true
				hooks = append(hooks, h.Name)
			}
		}
	}
	if len(hooks) > 0 {
		w("\n### tcpwatch check: hooks\n\n")
		header("hook")
		for _, h := range hooks {
			w("| %s |", h)
			for _, r := range results {
				cell := "—"
				for _, x := range r.Hooks {
					if x.Name == h {
						cell = x.Status
						if x.Status != "ok" {
							cell = "**MISSING**: " + x.Detail
						}
					}
				}
				w(" %s |", mdEscape(cell))
			}
			w("\n")
		}
	}
	// What check says each kernel tells only in part.
	w("\n### What each kernel tells only in part (tcpwatch check: DEGRADED)\n\n")
	for _, r := range results {
		if e.refusal(r.Kernel) != nil {
			w("- %s: everything: tcpwatch refuses this kernel (below the minimum)\n", r.Kernel.Release)
			continue
		}
		if len(r.Degraded) == 0 {
			w("- %s: nothing\n", r.Kernel.Release)
			continue
		}
		for _, d := range r.Degraded {
			w("- %s: %s\n", r.Kernel.Release, mdEscape(d))
		}
	}
	// Lab.
	var scen []string
	seen = map[string]bool{}
	for _, r := range results {
		for _, s := range append(append([]string{}, r.Listed...), sortedKeys(r.Lab)...) {
			if !seen[s] {
				seen[s] = true
				scen = append(scen, s)
			}
		}
	}
	if len(scen) > 0 {
		w("\n### Lab scenarios: verdicts per host\n\nA cell is `ok` when the scenario ended as it expects; otherwise it shows the verdicts seen per host and, below, the ones expected.\n\n")
		header("scenario")
		for _, s := range scen {
			w("| %s |", s)
			for _, r := range results {
				lr, ran := r.Lab[s]
				switch {
				case !ran:
					w(" not run |")
				case lr.OK && lr.RC == 0:
					w(" ok (%.0f s) |", lr.Secs)
				case !lr.HaveResult:
					w(" **no result** (rc=%d) %s |", lr.RC, mdEscape(firstOr(lr.Stderr, "")))
				default:
					w(" **%s**<br>expected %s |", mdEscape(verdictString(lr.Verdicts)), mdEscape(verdictString(lr.Expected)))
				}
			}
			w("\n")
		}
	}
	// Tests.
	var pkgs []string
	seen = map[string]bool{}
	for _, r := range results {
		for _, p := range sortedKeys(r.Tests) {
			if !seen[p] {
				seen[p] = true
				pkgs = append(pkgs, p)
			}
		}
	}
	if len(pkgs) > 0 {
		w("\n### Privileged test packages\n\n")
		header("package")
		for _, p := range pkgs {
			w("| %s |", p)
			for _, r := range results {
				tr, ran := r.Tests[p]
				switch {
				case !ran:
					w(" not run |")
				case tr.RC == 0:
					w(" pass (%d tests, %.0f s) |", tr.Passed, tr.Secs)
				case len(tr.Failed) == 0:
					w(" **exit %d** (crash or timeout) |", tr.RC)
				default:
					w(" **FAIL**: %s |", mdEscape(strings.Join(tr.Failed, ", ")))
				}
			}
			w("\n")
		}
	}
	// Differences and failures in detail.
	w("\n### Differences from lab/kernels/expect.json\n\n")
	any := false
	for _, r := range results {
		for _, d := range r.Diffs {
			any = true
			w("- %s: %s\n", r.Kernel.Release, mdEscape(d))
		}
		for _, a := range r.Allowed {
			w("- %s (allowed): %s\n", r.Kernel.Release, mdEscape(a))
		}
	}
	if !any {
		w("None.\n")
	}
	w("\n### Timings (guest seconds under qemu)\n\n")
	header("step")
	steps := []string{"boot+modules", "check", "lab (all scenarios)", "tests (all packages)", "whole guest (host wall time)"}
	for _, st := range steps {
		w("| %s |", st)
		for _, r := range results {
			var t float64
			for _, s := range r.Sections {
				switch {
				case st == "check" && s.Kind == "check",
					st == "lab (all scenarios)" && (s.Kind == "lab" || s.Kind == "lab-list"),
					st == "tests (all packages)" && s.Kind == "test",
					st == "boot+modules" && s.Kind == "modules":
					t += s.Secs
				}
			}
			if st == "whole guest (host wall time)" {
				t = r.Wall
			}
			if st == "lab (all scenarios)" && r.LabInTests {
				// The scenarios ran inside the lab's tests: their time
				// is counted there.
				for _, lr := range r.Lab {
					t += lr.Secs
				}
				w(" %.0f (in tests) |", t)
				continue
			}
			w(" %.0f |", t)
		}
		w("\n")
	}
	w("\n%s", howToRun)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// handWritten returns the part of the matrix file above matrixMark,
// the mark included; a file without the mark (or none) keeps nothing.
func handWritten(path string) (string, error) {
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return matrixMark + "\n", nil
	}
	if err != nil {
		return "", err
	}
	i := strings.Index(string(old), matrixMark)
	if i < 0 {
		return matrixMark + "\n", nil
	}
	return string(old[:i]) + matrixMark + "\n", nil
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
