package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// boot runs one guest under qemu and keeps its serial console in logPath,
// echoing the section markers as progress.
func boot(c *config, k *Kernel, img, logPath string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	machine := c.arch.machine
	if len(machine) == 0 {
		machine = []string{"-cpu", "max"}
	}
	kernel, err := bootableKernel(k, c.build)
	if err != nil {
		return err
	}
	args := append(machine,
		"-accel", c.accel, "-smp", strconv.Itoa(c.smp), "-m", strconv.Itoa(c.mem),
		"-kernel", kernel, "-initrd", img,
		"-append", "console="+c.arch.console+" panic=-1 oops=panic loglevel=1 random.trust_cpu=on rdinit=/init",
		"-no-reboot", "-display", "none", "-monitor", "none", "-serial", "stdio", "-nic", "none",
	)
	logf("%s: %s %s", k.Release, c.arch.qemu, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, c.arch.qemu, args...)
	cmd.Stdin = nil
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(io.TeeReader(stdout, f))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if lr := parseLabResult(line); lr != nil {
			line = fmt.Sprintf("@@LAB-RESULT %s ok=%v (%.0f s)", lr.Scenario, lr.OK && lr.RC == 0, lr.Secs)
		}
		if strings.HasPrefix(line, "@@") || strings.HasPrefix(line, "--- FAIL") {
			fmt.Fprintf(os.Stderr, "  [%s %6.0fs] %s\n", k.Release, time.Since(start).Seconds(), line)
		}
	}
	err = cmd.Wait()
	secs := time.Since(start).Seconds()
	fmt.Fprintf(f, "\n@@HOST wall=%.1f\n", secs)
	logf("%s: guest ran %.1f s", k.Release, secs)
	if ctx.Err() != nil {
		return fmt.Errorf("guest killed after %v", c.timeout)
	}
	return err
}

// Section is one framed step of the guest's plan.
type Section struct {
	Kind, Name string
	RC         int
	Secs       float64
	Lines      []string
	Stderr     []string
	Ended      bool
}

// KernelResult is what one guest showed.
type KernelResult struct {
	Kernel   *Kernel
	Guest    string
	Done     bool
	Wall     float64
	Sections []*Section
	Modules  []string // MODULE-FAIL lines
	Hooks    []Hook
	Degraded []string // what check says this kernel tells only in part
	Check    *Section
	Listed   []string
	// LabInTests: the lab step only listed the scenarios, and the lab's
	// TestScenarios told each one's result (@@LAB-RESULT lines).
	LabInTests bool
	Lab        map[string]*LabResult
	Tests      map[string]*TestResult
	Diffs      []string
	Allowed    []string
}

type Hook struct {
	Name, Status, Detail string
}

type LabResult struct {
	Scenario   string
	RC         int
	Secs       float64
	OK         bool
	HaveResult bool
	Verdicts   map[string][]string
	Expected   map[string][]string
	Missing    []string
	Narratives int
	Stderr     []string
}

type TestResult struct {
	Pkg     string
	RC      int
	Secs    float64
	Passed  int
	Failed  []string
	Skipped []string
	Key     map[string][]string // failed test -> its log lines
	Tail    []string            // the last lines, for a crash or timeout
}

func parseLog(path string) (*KernelResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &KernelResult{Lab: map[string]*LabResult{}, Tests: map[string]*TestResult{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	var cur *Section
	inStderr := false
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(line, "@@GUEST "):
			r.Guest = strings.TrimPrefix(line, "@@GUEST ")
		case strings.HasPrefix(line, "@@LAB-IN-TESTS"):
			r.LabInTests = true
		case line == "@@DONE":
			r.Done = true
		case strings.HasPrefix(line, "@@HOST wall="):
			r.Wall, _ = strconv.ParseFloat(strings.TrimPrefix(line, "@@HOST wall="), 64)
		case strings.HasPrefix(line, "@@MODULE-FAIL "):
			r.Modules = append(r.Modules, strings.TrimPrefix(line, "@@MODULE-FAIL "))
		case strings.HasPrefix(line, "@@BEGIN "):
			kind, name, _ := strings.Cut(strings.TrimPrefix(line, "@@BEGIN "), " ")
			cur = &Section{Kind: kind, Name: name, RC: -1}
			r.Sections = append(r.Sections, cur)
			inStderr = false
		case strings.HasPrefix(line, "@@END ") && cur != nil:
			for _, f := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(f, "rc="); ok {
					cur.RC, _ = strconv.Atoi(v)
				}
				if v, ok := strings.CutPrefix(f, "secs="); ok {
					cur.Secs, _ = strconv.ParseFloat(v, 64)
				}
			}
			cur.Ended = true
			cur = nil
		case line == "@@STDERR" && cur != nil:
			inStderr = true
		case cur != nil && inStderr:
			cur.Stderr = append(cur.Stderr, line)
		case cur != nil:
			cur.Lines = append(cur.Lines, line)
		}
	}
	for _, s := range r.Sections {
		switch s.Kind {
		case "check":
			r.Check = s
			for _, l := range s.Lines {
				fs := strings.Fields(l)
				if len(fs) >= 2 && (fs[0] == "ok" || fs[0] == "MISSING") {
					r.Hooks = append(r.Hooks, Hook{Name: fs[1], Status: fs[0], Detail: strings.TrimSpace(strings.SplitN(strings.TrimSpace(l), fs[1], 2)[1])})
				}
				if d, ok := strings.CutPrefix(strings.TrimSpace(l), "DEGRADED "); ok {
					r.Degraded = append(r.Degraded, d)
				}
			}
		case "lab-list":
			for i, l := range s.Lines {
				if fs := strings.Fields(l); i > 0 && len(fs) > 0 {
					r.Listed = append(r.Listed, fs[0])
				}
			}
		case "lab":
			r.Lab[s.Name] = parseLab(s)
		case "test":
			r.Tests[s.Name] = parseTest(s)
			for _, l := range s.Lines {
				if lr := parseLabResult(l); lr != nil {
					r.Lab[lr.Scenario] = lr
				}
			}
		}
	}
	return r, sc.Err()
}

func parseLab(s *Section) *LabResult {
	lr := &LabResult{Scenario: s.Name, RC: s.RC, Secs: s.Secs, Stderr: s.Stderr}
	if !s.Ended {
		lr.RC = -1
	}
	for _, l := range s.Lines {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var rec struct {
			Type     string              `json:"type"`
			Verdicts map[string][]string `json:"verdicts"`
			Expected map[string][]string `json:"expected"`
			OK       bool                `json:"ok"`
			Missing  []string            `json:"missing"`
		}
		if jsonUnmarshal(l, &rec) != nil {
			continue
		}
		switch rec.Type {
		case "narrative":
			lr.Narratives++
		case "lab_result":
			lr.HaveResult = true
			lr.OK, lr.Verdicts, lr.Expected, lr.Missing = rec.OK, rec.Verdicts, rec.Expected, rec.Missing
		}
	}
	return lr
}

// parseLabResult reads the result the lab's TestScenarios prints for
// one scenario (TCPWATCH_LAB_RESULTS): the lab_result record of
// `tcpwatch lab run -o json`, with the narratives told and, when the run
// itself failed, its error. As from lab run, a run that gave up waiting
// for its verdicts has a result (expect.json's scenario allowances apply
// to it); one that failed before it had one (no_result) has none.
func parseLabResult(line string) *LabResult {
	js, ok := strings.CutPrefix(strings.TrimSpace(line), "@@LAB-RESULT ")
	if !ok {
		return nil
	}
	var rec struct {
		Type       string              `json:"type"`
		Scenario   string              `json:"scenario"`
		Verdicts   map[string][]string `json:"verdicts"`
		Expected   map[string][]string `json:"expected"`
		OK         bool                `json:"ok"`
		Missing    []string            `json:"missing"`
		DurationMs int64               `json:"duration_ms"`
		Narratives int                 `json:"narratives"`
		Error      string              `json:"error"`
		NoResult   bool                `json:"no_result"`
	}
	if jsonUnmarshal(js, &rec) != nil || rec.Type != "lab_result" || rec.Scenario == "" {
		return nil
	}
	lr := &LabResult{Scenario: rec.Scenario, Secs: float64(rec.DurationMs) / 1000, OK: rec.OK,
		HaveResult: !rec.NoResult, Verdicts: rec.Verdicts, Expected: rec.Expected, Missing: rec.Missing, Narratives: rec.Narratives}
	// As lab run exits: 1 when the scenario did not end as expected.
	if !rec.OK || rec.Error != "" {
		lr.RC = 1
	}
	if rec.Error != "" {
		lr.Stderr = []string{rec.Error}
	}
	return lr
}

// transcript matches a test's log of timed events ("x_test.go:96: +2.04s ...").
var transcript = regexp.MustCompile(`_test\.go:\d+: \+[0-9.]+m?s `)

func parseTest(s *Section) *TestResult {
	tr := &TestResult{Pkg: s.Name, RC: s.RC, Secs: s.Secs, Key: map[string][]string{}}
	if !s.Ended {
		tr.RC = -1
	}
	logs := map[string][]string{}
	cur := ""
	for _, l := range s.Lines {
		t := strings.TrimSpace(l)
		for _, p := range []string{"=== RUN ", "=== CONT ", "=== NAME ", "=== PAUSE "} {
			if v, ok := strings.CutPrefix(t, p); ok && !strings.HasPrefix(l, " ") {
				cur = strings.TrimSpace(v)
			}
		}
		switch {
		case strings.HasPrefix(t, "--- FAIL: "):
			name := strings.Fields(strings.TrimPrefix(t, "--- FAIL: "))[0]
			tr.Failed = append(tr.Failed, name)
			tr.Key[name] = keyLines(logs[name])
		case strings.HasPrefix(t, "--- PASS: ") && !strings.HasPrefix(l, " "):
			tr.Passed++
		case strings.HasPrefix(t, "--- SKIP: "):
			tr.Skipped = append(tr.Skipped, strings.Fields(strings.TrimPrefix(t, "--- SKIP: "))[0])
		case strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- "):
		case cur != "" && transcript.MatchString(t):
			// t.Log of a timed event transcript: not a key line.
		case cur != "" && (strings.Contains(t, "_test.go:") || strings.HasPrefix(t, "panic:")):
			logs[cur] = append(logs[cur], t)
		}
	}
	n := len(s.Lines)
	tr.Tail = s.Lines[max(0, n-15):]
	return tr
}

// keyLines drops the lines a test logs from one place three times or more
// (event dumps): what is left is its errors and notes.
func keyLines(lines []string) []string {
	at := map[string]int{}
	loc := func(l string) string { f, _, _ := strings.Cut(l, ": "); return f }
	for _, l := range lines {
		at[loc(l)]++
	}
	var out []string
	for _, l := range lines {
		if at[loc(l)] < 3 {
			out = append(out, l)
		}
	}
	return out
}

// bootableKernel is a kernel image qemu's -kernel loads. Debian's amd64
// vmlinuz is a bzImage and its arm64 vmlinuz up to 6.x a gzip'd Image,
// both of which qemu 7.2 reads; an arm64 kernel built with EFI_ZBOOT is a
// PE file ("MZ", then "zimg") whose payload is the compressed Image:
// it is unpacked once into build.
func bootableKernel(k *Kernel, build string) (string, error) {
	f, err := os.Open(k.vmlinuz())
	if err != nil {
		return "", err
	}
	defer f.Close()
	var hdr [56]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil || string(hdr[0:2]) != "MZ" || string(hdr[4:8]) != "zimg" {
		return k.vmlinuz(), nil
	}
	// zboot-header.S: payload offset and size (le32) at 8 and 12, the
	// compression's name at 24.
	off := int64(binary.LittleEndian.Uint32(hdr[8:12]))
	size := int64(binary.LittleEndian.Uint32(hdr[12:16]))
	comp := strings.TrimRight(string(hdr[24:56]), "\x00")
	out := filepath.Join(build, "Image-"+k.Release)
	if st, err := os.Stat(out); err == nil && st.Size() > 0 {
		return out, nil
	}
	tool := map[string][]string{"gzip": {"gzip", "-dc"}, "zstd": {"zstd", "-dcq"}, "xz": {"xz", "-dc"}}[comp]
	if tool == nil {
		return "", fmt.Errorf("%s: EFI zboot image compressed with %q, which this tool does not unpack", k.vmlinuz(), comp)
	}
	cmd := exec.Command(tool[0], tool[1:]...)
	cmd.Stdin = io.NewSectionReader(f, off, size)
	img, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: unpacking its %s payload: %v", k.vmlinuz(), comp, err)
	}
	logf("%s: EFI zboot image: %s payload unpacked to %s (%d bytes)", k.Release, comp, out, len(img))
	return out, os.WriteFile(out, img, 0o644)
}
