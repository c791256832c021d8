package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const sampleLog = "boot noise\r\n" +
	"@@GUEST 6.1.0-56-amd64 cpus=2 mem=2012132kB\r\n" +
	"@@BEGIN modules\r\n@@END modules rc=0 secs=0.2\r\n" +
	"@@BEGIN check\r\n" +
	"hooks:\r\n" +
	"  ok       tcp_set_state              tp_btf sock:inet_sock_set_state (tw_set_state)\r\n" +
	"  MISSING  tcp_cong_state_set         no tracepoint; lost: stalled\r\n" +
	"@@STDERR\r\n@@END check rc=0 secs=2.2\r\n" +
	"@@BEGIN lab-list\r\nNAME  ROW  WHAT\r\ncable-pull  4  x\r\nconnect-refused  13  y\r\n@@END lab-list rc=0 secs=0.1\r\n" +
	"@@BEGIN lab cable-pull\r\n" +
	`{"type":"narrative","host":"A"}` + "\r\n" +
	`{"type":"lab_result","scenario":"cable-pull","verdicts":{"A":["retransmit_timeout"],"B":[]},"expected":{"A":["stalled","retransmit_timeout"]},"ok":false,"missing":["A:stalled"]}` + "\r\n" +
	"@@STDERR\r\ntcpwatch: scenario cable-pull did not end as expected\r\n@@END lab cable-pull rc=1 secs=21.4\r\n" +
	"@@BEGIN lab connect-refused\r\n" +
	`{"type":"lab_result","scenario":"connect-refused","verdicts":{"A":["refused"]},"expected":{"A":["refused"]},"ok":true}` + "\r\n" +
	"@@STDERR\r\n@@END lab connect-refused rc=0 secs=3\r\n" +
	"@@BEGIN test tracer\r\n" +
	"=== RUN   TestA\r\n--- PASS: TestA (0.1s)\r\n" +
	"=== RUN   TestB\r\n=== RUN   TestB/sub\r\n    tracer_test.go:12: want x, got y\r\n" +
	"    --- FAIL: TestB/sub (0.2s)\r\n--- FAIL: TestB (0.2s)\r\nFAIL\r\n" +
	"@@END test tracer rc=1 secs=9\r\n" +
	"@@BEGIN test lab\r\npanic: boom\r\n" // the guest died here

func TestParseAndCompare(t *testing.T) {
	p := filepath.Join(t.TempDir(), "guest.log")
	if err := os.WriteFile(p, []byte(sampleLog), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := parseLog(p)
	if err != nil {
		t.Fatal(err)
	}
	r.Kernel = &Kernel{Version: "6.1.192-2", Release: "6.1.0-56-amd64"}
	if r.Done || r.Guest != "6.1.0-56-amd64 cpus=2 mem=2012132kB" {
		t.Errorf("done %v, guest %q", r.Done, r.Guest)
	}
	if len(r.Hooks) != 2 || r.Hooks[1].Status != "MISSING" || r.Hooks[1].Name != "tcp_cong_state_set" {
		t.Errorf("hooks %+v", r.Hooks)
	}
	if !slices.Equal(r.Listed, []string{"cable-pull", "connect-refused"}) {
		t.Errorf("listed %v", r.Listed)
	}
	cp := r.Lab["cable-pull"]
	if cp == nil || cp.OK || !cp.HaveResult || cp.Narratives != 1 || cp.RC != 1 || cp.Verdicts["A"][0] != "retransmit_timeout" {
		t.Errorf("cable-pull %+v", cp)
	}
	tr := r.Tests["tracer"]
	if tr == nil || !slices.Equal(tr.Failed, []string{"TestB/sub", "TestB"}) || tr.Passed != 1 || len(tr.Key["TestB/sub"]) != 1 {
		t.Errorf("tracer %+v", tr)
	}
	if l := r.Tests["lab"]; l == nil || l.RC != -1 {
		t.Errorf("lab (cut off) %+v", l)
	}

	// Nothing allowed: every difference is reported.
	if compare([]*KernelResult{r}, &Expect{}) {
		t.Fatal("compare: no difference found")
	}
	all := strings.Join(r.Diffs, "\n")
	for _, want := range []string{"did not finish", "hook tcp_cong_state_set MISSING", "scenario cable-pull", "TestB/sub failed: tracer_test.go:12", "test lab: exit -1"} {
		if !strings.Contains(all, want) {
			t.Errorf("diffs lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "connect-refused") {
		t.Errorf("a passing scenario is a difference:\n%s", all)
	}

	// Allowed on 6.1 only, with the exact verdicts.
	r.Diffs, r.Allowed = nil, nil
	e := &Expect{Allow: []Allow{
		{Below: "6.2", Hook: "tcp_cong_state_set", Why: "w"},
		{Min: "6.1", Below: "6.17", Scenario: "cable-pull", Verdicts: map[string][]string{"A": {"retransmit_timeout"}}, Why: "w"},
		{Min: "6.2", Test: "tracer", Name: "TestB", Why: "not this kernel"},
	}}
	compare([]*KernelResult{r}, e)
	all = strings.Join(r.Diffs, "\n")
	if strings.Contains(all, "MISSING") || strings.Contains(all, "cable-pull") || !strings.Contains(all, "TestB") {
		t.Errorf("allowances misapplied:\n%s\nallowed: %v", all, r.Allowed)
	}

	// With Missing, only with expectations among those unmet: one not
	// listed (an unexpected notice, say) is a difference.
	for _, tc := range []struct {
		missing []string
		allowed bool
	}{{cp.Missing, true}, {append(slices.Clone(cp.Missing), "B:time_wait_rst_ended"), true}, {[]string{"B:time_wait_rst_ended"}, false}} {
		r.Diffs, r.Allowed = nil, nil
		compare([]*KernelResult{r}, &Expect{Allow: []Allow{
			{Scenario: "cable-pull", Verdicts: map[string][]string{"A": {"retransmit_timeout"}}, Missing: tc.missing, Why: "w"}}})
		if got := !strings.Contains(strings.Join(r.Diffs, "\n"), "scenario cable-pull"); got != tc.allowed {
			t.Errorf("missing %q allowed: %v, want %v (the run's: %q)", tc.missing, got, tc.allowed, cp.Missing)
		}
	}
}

func TestUpstream(t *testing.T) {
	for v, want := range map[string][]int{"6.1.192-2": {6, 1, 192}, "6.12.95-1~bpo12+1": {6, 12, 95}, "7.3.4-1~bpo13+1": {7, 3, 4}, "6.17": {6, 17}} {
		if got := upstream(v); !slices.Equal(got, want) {
			t.Errorf("upstream(%q) = %v, want %v", v, got, want)
		}
	}
	if !versionLess(upstream("6.1.192"), upstream("6.2")) || versionLess(upstream("6.12.95"), upstream("6.2")) {
		t.Error("versionLess")
	}
}

func TestModName(t *testing.T) {
	for f, want := range map[string]string{"kernel/net/nft_meta_bridge.ko.xz": "nft_meta_bridge", "a/crc32c-generic.ko": "crc32c_generic", "x.ko.zst": "x"} {
		if got := modName(f); got != want {
			t.Errorf("modName(%q) = %q, want %q", f, got, want)
		}
	}
}

// A kernel tcpwatch refuses passes when check fails saying so, and only then.
func TestRefusedKernel(t *testing.T) {
	e := &Expect{Allow: []Allow{{Below: "6.1", Refused: "is older than 6.1", Why: "helpers tracing programs lack before 5.12"}}}
	k510 := &Kernel{Version: "5.10.223-1", Release: "5.10.0-32-amd64"}
	k61 := &Kernel{Version: "6.1.192-2", Release: "6.1.0-56-amd64"}
	if e.refusal(k510) == nil || e.refusal(k61) != nil {
		t.Fatalf("refusal: 5.10 %v, 6.1 %v", e.refusal(k510), e.refusal(k61))
	}
	for _, tc := range []struct {
		check *Section
		ok    bool
	}{
		{&Section{RC: 1, Stderr: []string{"tcpwatch: kernel 5.10.0-32-amd64 is older than 6.1, the oldest tcpwatch runs on"}}, true},
		{&Section{RC: 0}, false},
		{&Section{RC: 1, Stderr: []string{"tcpwatch: not permitted to load BPF programs"}}, false},
		{nil, false},
	} {
		r := &KernelResult{Kernel: k510, Done: true, Check: tc.check}
		if got := compare([]*KernelResult{r}, e); got != tc.ok {
			t.Errorf("check %+v: compare %v, want %v (diffs %v)", tc.check, got, tc.ok, r.Diffs)
		}
	}
}

// An arm64 kernel built with EFI_ZBOOT is a PE file whose payload is the
// compressed Image; qemu 7.2 cannot boot it, so it is unpacked. A plain
// Image (Debian's arm64 kernels so far) or a bzImage is booted as it is.
func TestBootableKernel(t *testing.T) {
	dir := t.TempDir()
	image := bytes.Repeat([]byte("arm64 Image "), 1000)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(image)
	zw.Close()
	hdr := make([]byte, 64)
	copy(hdr, "MZ")
	copy(hdr[4:], "zimg")
	binary.LittleEndian.PutUint32(hdr[8:], 64)
	binary.LittleEndian.PutUint32(hdr[12:], uint32(gz.Len()))
	copy(hdr[24:], "gzip")
	zboot := filepath.Join(dir, "vmlinuz-zboot")
	if err := os.WriteFile(zboot, append(hdr, gz.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := bootableKernel(&Kernel{Release: "7.9.0-1-arm64", Vmlinuz: zboot}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, image) {
		t.Errorf("%s: %d bytes (%v), want the %d-byte Image", got, len(b), err, len(image))
	}
	plain := filepath.Join(dir, "vmlinuz-plain")
	os.WriteFile(plain, append([]byte("MZ\x00\x00ARMd"), image...), 0o644)
	if got, err := bootableKernel(&Kernel{Release: "6.1.0-57-arm64", Vmlinuz: plain}, dir); err != nil || got != plain {
		t.Errorf("a plain Image: %s, %v; want it as it is", got, err)
	}
	copy(hdr[24:], "lzma\x00")
	odd := filepath.Join(dir, "vmlinuz-lzma")
	os.WriteFile(odd, append(hdr, gz.Bytes()...), 0o644)
	if _, err := bootableKernel(&Kernel{Release: "7.9.0-2-arm64", Vmlinuz: odd}, dir); err == nil || !strings.Contains(err.Error(), "lzma") {
		t.Errorf("an lzma zboot image: %v, want an error naming lzma", err)
	}
}

// TestMatrixKeepsTheProse: rewriting the matrix keeps the hand-written
// part of docs/kernels.md above the mark and replaces what follows.
func TestMatrixKeepsTheProse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kernels.md")
	prose := "# Kernels\n\nThe minimum is 6.1.\n\n"
	if err := os.WriteFile(path, []byte(prose+matrixMark+"\n## Kernel matrix\n\nan old run\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeMatrix(path, nil, &Expect{}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), prose+matrixMark+"\n## Kernel matrix\n") {
		t.Errorf("the prose or the mark was not kept:\n%s", got)
	}
	if strings.Contains(string(got), "an old run") || strings.Count(string(got), matrixMark) != 1 {
		t.Errorf("the old matrix was not replaced:\n%s", got)
	}
	// A file without the mark gets one, so the next run keeps what is written above it.
	if err := os.WriteFile(path, []byte("# Kernel matrix\n\nold\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeMatrix(path, nil, &Expect{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !strings.HasPrefix(string(got), matrixMark) || strings.Contains(string(got), "old\n") {
		t.Errorf("a file without the mark:\n%s", got)
	}
}

// Where the guest runs the lab's tests, its lab step only lists the
// scenarios: TestScenarios tells each one's result, which the matrix and
// expect.json's scenario allowances read as they read lab run's.
func TestLabResultsFromTests(t *testing.T) {
	all := &config{testCount: 1}
	both := map[string]bool{"lab": true, "tests": true}
	withLab := []string{"tracer=/src/tracer", "lab=/src/lab"}
	if !labRunsInTests(all, both, withLab) {
		t.Error("lab and tests with the lab package: the scenarios should run once, in the tests")
	}
	for _, tc := range []struct {
		c     *config
		steps map[string]bool
		tests []string
	}{
		{all, map[string]bool{"lab": true}, nil},
		{all, both, []string{"tracer=/src/tracer"}},
		{&config{testCount: 1, scenarios: "cable-pull"}, both, withLab},
		{&config{testCount: 1, testRun: "TestScenarios/^cable-pull$"}, both, withLab},
		{&config{testCount: 10}, both, withLab},
	} {
		if labRunsInTests(tc.c, tc.steps, tc.tests) {
			t.Errorf("%+v %v %v: the lab step should run the scenarios itself", tc.c, tc.steps, tc.tests)
		}
	}

	log := "@@GUEST 6.1.0-57-amd64 cpus=2 mem=2012132kB\r\n" +
		"@@BEGIN lab-list\r\nNAME  ROW  WHAT\r\ncable-pull  4  x\r\nconnect-refused  13  y\r\nhost-reboot  7  z\r\n@@END lab-list rc=0 secs=0.1\r\n" +
		"@@LAB-IN-TESTS 1\r\n" +
		"@@BEGIN test lab\r\n=== RUN   TestScenarios\r\n=== RUN   TestScenarios/cable-pull\r\n" +
		`@@LAB-RESULT {"type":"lab_result","duration_ms":8400,"scenario":"cable-pull","verdicts":{"A":["retransmit_timeout"]},"expected":{"A":["stalled","retransmit_timeout"]},"ok":false,"missing":["A:stalled"],"narratives":2}` + "\r\n" +
		"    lab_test.go:128: verdicts map[A:[retransmit_timeout]], missing or unexpected [A:stalled]\r\n" +
		"=== RUN   TestScenarios/connect-refused\r\n" +
		`@@LAB-RESULT {"type":"lab_result","duration_ms":1076,"scenario":"connect-refused","verdicts":{"A":["connect_refused"]},"expected":{"A":["connect_refused"]},"ok":true,"narratives":1}` + "\r\n" +
		"=== RUN   TestScenarios/timewait-syn-old\r\n" +
		`@@LAB-RESULT {"type":"lab_result","duration_ms":60100,"scenario":"timewait-syn-old","verdicts":{},"expected":{},"ok":false,"missing":["A notice syn_answered_old_ack"],"narratives":0,"error":"gave up after 1m0s waiting for the expected verdicts"}` + "\r\n" +
		"=== RUN   TestScenarios/broken\r\n" +
		`@@LAB-RESULT {"type":"lab_result","duration_ms":100,"scenario":"broken","verdicts":null,"expected":null,"ok":false,"narratives":0,"error":"building hosts: no veth","no_result":true}` + "\r\n" +
		"    --- FAIL: TestScenarios/cable-pull (8.40s)\r\n    --- PASS: TestScenarios/connect-refused (1.08s)\r\n--- FAIL: TestScenarios (9.48s)\r\nFAIL\r\n" +
		"@@END test lab rc=1 secs=10\r\n@@DONE\r\n"
	p := filepath.Join(t.TempDir(), "guest.log")
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := parseLog(p)
	if err != nil {
		t.Fatal(err)
	}
	r.Kernel = &Kernel{Version: "6.1.192-3", Release: "6.1.0-57-amd64"}
	if !r.LabInTests {
		t.Fatal("@@LAB-IN-TESTS not read")
	}
	cp, cr := r.Lab["cable-pull"], r.Lab["connect-refused"]
	if cp == nil || cp.OK || !cp.HaveResult || cp.RC != 1 || cp.Secs != 8.4 || cp.Narratives != 2 || cp.Verdicts["A"][0] != "retransmit_timeout" {
		t.Errorf("cable-pull %+v", cp)
	}
	if cr == nil || !cr.OK || cr.RC != 0 {
		t.Errorf("connect-refused %+v", cr)
	}
	// A run that gave up waiting has its result, as lab run prints one; a
	// run that failed before it had one has none.
	if ts := r.Lab["timewait-syn-old"]; ts == nil || !ts.HaveResult || ts.RC != 1 || ts.OK || len(ts.Stderr) != 1 {
		t.Errorf("timewait-syn-old %+v", ts)
	}
	if b := r.Lab["broken"]; b == nil || b.HaveResult || b.RC != 1 {
		t.Errorf("broken %+v", b)
	}
	compare([]*KernelResult{r}, &Expect{})
	diffs := strings.Join(r.Diffs, "\n")
	for _, want := range []string{"scenario cable-pull: verdicts", "scenario host-reboot: the lab's TestScenarios told no result", "test lab: TestScenarios/cable-pull failed"} {
		if !strings.Contains(diffs, want) {
			t.Errorf("diffs lack %q:\n%s", want, diffs)
		}
	}
	if strings.Contains(diffs, "connect-refused") {
		t.Errorf("a passing scenario is a difference:\n%s", diffs)
	}
	// expect.json's allowances apply as they did to lab run's results.
	r.Diffs, r.Allowed = nil, nil
	compare([]*KernelResult{r}, &Expect{Allow: []Allow{
		{Below: "6.2", Scenario: "cable-pull", Verdicts: map[string][]string{"A": {"retransmit_timeout"}}, Why: "w"},
		{Below: "6.2", Test: "lab", Name: "TestScenarios/cable-pull", Why: "w"},
		{Below: "6.11", Scenario: "timewait-syn-old", Why: "w"},
	}})
	if diffs := strings.Join(r.Diffs, "\n"); strings.Contains(diffs, "cable-pull") || strings.Contains(diffs, "scenario timewait-syn-old") ||
		!strings.Contains(diffs, "host-reboot") || !strings.Contains(diffs, "scenario broken: no lab_result") {
		t.Errorf("allowances misapplied:\n%s\nallowed: %v", diffs, r.Allowed)
	}
}

// A guest's test binary runs in its package's directory under /src, and
// the engine's reconcile test reads the tracker's recording through
// ../tracker/testdata: every package's testdata must be in the image, at
// the repository's layout (CI's 6.1 and newest guests failed without it).
func TestGuestCarriesEveryPackagesTestdata(t *testing.T) {
	files, err := repoTestdata("../../..")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range files {
		have[f.path] = true
		if strings.Contains(f.path, "/.git/") || strings.HasPrefix(f.path, "src/build/") {
			t.Errorf("ships %s", f.path)
		}
	}
	for _, want := range []string{"src/tracer/tracker/testdata/firewall-drops-replies.hex", "src/tracer/engine/testdata/churn200.rec.gz"} {
		if !have[want] {
			t.Errorf("%s is not in the guest image (have %d testdata files)", want, len(files))
		}
	}
}
