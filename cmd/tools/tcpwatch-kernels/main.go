// Command tcpwatch-kernels runs tcpwatch's check, lab scenarios and
// privileged tests inside Debian's own kernels booted under qemu, and writes
// the result matrix (make test-kernels; docs/kernels.md says how). Paths
// are relative to the root of the tcpwatch tree, wherever in the tree it
// is started.
//
// For each kernel it downloads Debian's packages with apt (never installing
// them), builds a busybox initramfs with static tcpwatch and test binaries
// and the modules the lab needs, boots it with qemu (TCG unless /dev/kvm
// works), reads the guest's framed serial output, and compares the results
// with lab/kernels/expect.json. It exits 1 on any difference.
package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/cmd/tools/internal/reporoot"
)

//go:embed init.sh
var initScript []byte

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tcpwatch-kernels: "+format+"\n", args...)
}

type config struct {
	kernels    []string
	cache      string
	build      string
	out        string
	expect     string
	steps      map[string]bool
	scenarios  string
	smp        int
	mem        int
	timeout    time.Duration
	testTO     string
	labTO      string
	testRun    string
	testCount  int
	update     bool
	reportOnly bool
	accel      string
	tests      string
	arch       guestArch
}

// guestArch is what differs between the architectures of the matrix: the
// Go build, qemu's binary and machine, and the serial console's name.
type guestArch struct {
	deb, goarch string // Debian's and Go's names
	qemu        string
	machine     []string // qemu arguments before the common ones
	console     string
}

var guestArches = map[string]guestArch{
	"amd64": {deb: "amd64", goarch: "amd64", qemu: "qemu-system-x86_64", console: "ttyS0"},
	// virt is qemu's generic arm64 board: the kernel boots from -kernel
	// with a device tree qemu writes, no firmware. pauth-impdef: TCG
	// emulates pointer authentication with a cheap hash instead of QARMA
	// (several times faster; the guest cannot tell).
	"arm64": {deb: "arm64", goarch: "arm64", qemu: "qemu-system-aarch64", console: "ttyAMA0",
		machine: []string{"-M", "virt", "-cpu", "max,pauth-impdef=on"}},
}

func main() {
	var c config
	var kernels, steps, arch string
	flag.StringVar(&kernels, "kernels", "5.10 6.1 6.12 newest", "kernels to run: newest, or a version prefix of linux-image-ARCH (5.10, 6.1, 6.12, 7.x)")
	flag.StringVar(&arch, "arch", "amd64", "the kernels' architecture: amd64 or arm64 (emulated by qemu's TCG)")
	flag.StringVar(&c.cache, "cache", "/var/cache/tcpwatch-kernels", "where kernel packages are downloaded and unpacked")
	flag.StringVar(&c.build, "build", "", "binaries, initramfs images and raw guest logs (default build/kernels, build/kernels-arm64)")
	flag.StringVar(&c.out, "out", "-", "the matrix to write (empty: none; default docs/kernels.md, docs/kernels-arm64.md)")
	flag.StringVar(&c.expect, "expect", "lab/kernels/expect.json", "the allowed differences")
	flag.StringVar(&steps, "steps", "check,lab,tests", "what the guest runs: check, lab, tests")
	flag.StringVar(&c.scenarios, "scenarios", "", "only these lab scenarios (space-separated; default all)")
	flag.StringVar(&c.tests, "tests", "", "only these test packages (space-separated, e.g. \"tracer lab/netlab\"; default all)")
	flag.IntVar(&c.smp, "smp", 2, "guest CPUs")
	flag.IntVar(&c.mem, "mem", 2048, "guest memory, MiB")
	flag.DurationVar(&c.timeout, "timeout", 60*time.Minute, "give up on a guest after this long")
	flag.StringVar(&c.testTO, "test-timeout", "30m", "-test.timeout of each test binary in the guest")
	// A lab scenario gives up 20 s after it starts by default, building
	// its hosts included. Under TCG on a loaded machine building them
	// alone took 21-25 s in the 7.3 arm64 guest (load average 10-19),
	// and the scenario failed with the right verdicts on their way.
	flag.StringVar(&c.labTO, "lab-timeout", "60s", "--timeout of each lab scenario in the guest (lab run, and the lab's TestScenarios: TCPWATCH_LAB_TIMEOUT)")
	flag.StringVar(&c.testRun, "run", "", "only the tests matching this -test.run pattern (for chasing one failure)")
	flag.IntVar(&c.testCount, "count", 1, "run each test this many times (-test.count; for chasing a flaky one)")
	flag.BoolVar(&c.update, "apt-update", false, "run apt-get update even if the sources did not change")
	flag.StringVar(&c.accel, "accel", "tcg,thread=single", "qemu accelerator (kvm hangs nested here; see the matrix notes on thread=single)")
	flag.BoolVar(&c.reportOnly, "report-only", false, "boot nothing: rebuild the matrix from the logs in -build")
	flag.Parse()
	// Paths (docs/, lab/, build/, the product's packages) are the tree's.
	if err := reporoot.Chdir(); err != nil {
		logf("%v", err)
		os.Exit(1)
	}
	if c.testCount < 1 {
		logf("-count %d: must be at least 1", c.testCount)
		os.Exit(2)
	}
	ga, known := guestArches[arch]
	if !known {
		logf("-arch %s: amd64 or arm64", arch)
		os.Exit(2)
	}
	c.arch = ga
	suffix := ""
	if arch != "amd64" {
		suffix = "-" + arch
	}
	if c.build == "" {
		c.build = "build/kernels" + suffix
	}
	if c.out == "-" {
		c.out = "docs/kernels" + suffix + ".md"
	}
	c.kernels = strings.Fields(strings.ReplaceAll(kernels, ",", " "))
	c.steps = map[string]bool{}
	for _, s := range strings.Split(steps, ",") {
		c.steps[strings.TrimSpace(s)] = true
	}
	ok, err := run(&c)
	if err != nil {
		logf("%v", err)
		os.Exit(2)
	}
	if !ok {
		logf("differences from %s: see above and %s", c.expect, c.out)
		os.Exit(1)
	}
}

func run(c *config) (bool, error) {
	if err := os.MkdirAll(c.build, 0o755); err != nil {
		return false, err
	}
	exp, err := loadExpect(c.expect)
	if err != nil {
		return false, err
	}
	var kernels []*Kernel
	if c.reportOnly {
		b, err := os.ReadFile(filepath.Join(c.build, "kernels.json"))
		if err != nil {
			return false, fmt.Errorf("-report-only: %v", err)
		}
		if err := json.Unmarshal(b, &kernels); err != nil {
			return false, err
		}
	} else {
		if err := ensureSources(c.update, c.arch.deb); err != nil {
			return false, err
		}
		rows, err := madison(c.arch.deb)
		if err != nil {
			return false, err
		}
		seen := map[string]bool{}
		for _, sel := range c.kernels {
			k, err := fetch(sel, c.arch.deb, rows, c.cache)
			if err != nil {
				return false, err
			}
			if seen[k.Version] {
				logf("%s is %s again: run once", sel, k.Version)
				continue
			}
			seen[k.Version] = true
			logf("kernel %s: %s from %s (%s)", sel, k.Release, k.Suite, strings.Join(k.Packages, " "))
			kernels = append(kernels, k)
		}
		b, _ := json.MarshalIndent(kernels, "", "  ")
		os.WriteFile(filepath.Join(c.build, "kernels.json"), b, 0o644)
	}

	var results []*KernelResult
	var bins *binaries
	for _, k := range kernels {
		logPath := filepath.Join(c.build, "guest-"+k.Release+".log")
		if !c.reportOnly {
			if bins == nil {
				if bins, err = buildBinaries(c); err != nil {
					return false, err
				}
			}
			img := filepath.Join(c.build, "initramfs-"+k.Release+".cpio.gz")
			steps := c.steps
			if a := exp.refusal(k); a != nil {
				// tcpwatch refuses this kernel: all there is to see is
				// that it says so.
				logf("%s: older than tcpwatch's minimum: check only (%s)", k.Release, a.Why)
				steps = map[string]bool{"check": true}
			}
			if err := makeImage(c, k, bins, img, steps); err != nil {
				return false, fmt.Errorf("%s: %v", k.Release, err)
			}
			if err := boot(c, k, img, logPath); err != nil {
				logf("%s: %v", k.Release, err)
			}
		}
		r, err := parseLog(logPath)
		if err != nil {
			return false, err
		}
		r.Kernel = k
		results = append(results, r)
	}
	ok := compare(results, exp)
	passed, failed := 0, 0
	for _, r := range results {
		for _, d := range r.Diffs {
			logf("%s: %s", r.Kernel.Release, d)
		}
		if len(r.Diffs) == 0 {
			passed++
		} else {
			failed++
		}
	}
	defer fmt.Printf("kernels: %d passed, %d failed\n", passed, failed)
	if c.out != "" {
		if err := writeMatrix(c.out, results, exp); err != nil {
			return false, err
		}
		logf("wrote %s", c.out)
	}
	return ok, nil
}

type binaries struct {
	tcpwatch string
	tests    []testBinary
	busybox  string
	// testdata are every package's testdata files, shipped whole: a
	// package's tests may read a sibling's recordings (the engine's
	// reconcile test replays one of the tracker's).
	testdata []guestFile
}

type testBinary struct{ pkg, dir, file string }

// hostOnlyTests need software the guest does not carry (a busybox
// initramfs): real servers and clients from Debian (redis, PostgreSQL,
// nginx, OpenSSH, Prometheus, python3 and curl as real clients, the OpenTelemetry Collector built with the Go toolchain), bash (to place a connecting process in a cgroup), strace, setpriv, systemd-analyze, a cgo-free rebuild of the
// binary, or the repository's files. They test tcpwatch against that
// software, not against the kernel, and run on the host in make test;
// the guest names them as skipped, never silently. The incident tests
// (TestIncident*) run up to 2,000 connections at once to check user space's
// grouping and its line and byte budgets: under TCG they would take most of
// a guest's time to prove nothing about the kernel that the lab's
// per-connection scenarios, run in every guest, do not already prove.
const hostOnlyTests = `^(TestApplicationConnectTimeout|TestClientTimesOutThenCloses|TestOrphanFoundAtStartup|TestProcessNameNotThreadName|TestThreadNameOf|TestIncident|TestTopInTmux|TestExposureRedis|TestRedis|TestPsql|TestNginx|TestSSH|TestPrometheus|TestOTLP|TestContainerAttribution|TestCgroupOfTaskContextRecords|TestCapabilitiesDroppedAfterStart|TestRunsWith|TestDocsExamples|TestVerdictsAreDocumented|TestREADMEFlagsTable|TestREADMECommands|TestDaemonSet|TestSystemd|TestBPFObjectIsCommitted|TestNeverTakesAnotherProcessDescriptor)`

// testArgs are the test binaries' extra flags in the guest.
func testArgs(run string, count int) string {
	args := fmt.Sprintf("-test.count=%d -test.skip=%s", count, hostOnlyTests)
	if run != "" {
		args += " -test.run=" + run
	}
	return args
}

// needsKernel says whether a package's tests need the real kernel: one of
// its test files calls testkit.RequirePrivileged (the test kit's gate for
// tests that load BPF programs or build namespaces).
func needsKernel(dir string, testFiles []string) bool {
	for _, name := range testFiles {
		src, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil && bytes.Contains(src, []byte("testkit.RequirePrivileged(")) {
			return true
		}
	}
	return false
}

// repoTestdata lists every regular file under a directory named testdata
// in the repository at root, placed at the same path under the guest's
// /src, where each test binary runs in its package's directory: a test
// that reads ../tracker/testdata finds it as it does on the host.
func repoTestdata(root string) ([]guestFile, error) {
	var files []guestFile
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "build") {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(root, p)
		if d.Type().IsRegular() && slices.Contains(strings.Split(filepath.Dir(rel), string(filepath.Separator)), "testdata") {
			files = append(files, guestFile{path: "src/" + filepath.ToSlash(rel), perm: 0o644, host: p})
		}
		return nil
	})
	return files, err
}

// hostOnlyPackages are test packages that only check the repository's
// files (deploy manifests): nothing in them depends on the kernel.
var hostOnlyPackages = map[string]bool{"deploy": true}

// buildBinaries builds a static tcpwatch for the guests' architecture and,
// when they run tests, a static test binary for each package whose tests
// need the real kernel (see needsKernel).
func buildBinaries(c *config) (*binaries, error) {
	bin := filepath.Join(c.build, "bin")
	os.RemoveAll(bin)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+c.arch.goarch)
	b := &binaries{tcpwatch: filepath.Join(bin, "tcpwatch")}
	logf("go build ./cmd/tcpwatch (static, %s)", c.arch.goarch)
	cmd := exec.Command("go", "build", "-o", b.tcpwatch, "./cmd/tcpwatch")
	cmd.Env, cmd.Stderr = env, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build: %v", err)
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{.Dir}}|{{.Module.Path}}|{{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}`, "./...").Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !c.steps["tests"] {
			break
		}
		f := strings.SplitN(line, "|", 4)
		if len(f) != 4 || !needsKernel(f[1], strings.Fields(f[3])) {
			continue
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(f[0], f[2]), "/")
		if hostOnlyPackages[rel] {
			logf("%s: host-only tests (repository files), not run in the guest", rel)
			continue
		}
		file := filepath.Join(bin, strings.ReplaceAll(rel, "/", "_")+".test")
		logf("go test -c ./%s (static, %s)", rel, c.arch.goarch)
		cmd := exec.Command("go", "test", "-c", "-o", file, "./"+rel)
		cmd.Env, cmd.Stderr = env, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go test -c ./%s: %v", rel, err)
		}
		if _, err := os.Stat(file); err == nil {
			b.tests = append(b.tests, testBinary{pkg: rel, dir: f[1], file: file})
		}
	}
	if c.steps["tests"] {
		root, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		if b.testdata, err = repoTestdata(root); err != nil {
			return nil, err
		}
	}
	if c.steps["tests"] && len(b.tests) == 0 {
		// A matrix whose guests run no test would pass for nothing.
		return nil, errors.New("no test package needs the real kernel: none calls testkit.RequirePrivileged")
	}
	if c.arch.deb != hostDebArch() {
		bb, err := foreignBusybox(c.arch.deb, c.cache)
		if err != nil {
			return nil, err
		}
		b.busybox = bb
		return b, nil
	}
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if out, err := exec.Command("file", "-L", p).Output(); err == nil && strings.Contains(string(out), "statically linked") {
			b.busybox = p
			break
		}
		if _, err := os.Stat(p); err == nil && b.busybox == "" {
			b.busybox = p
		}
	}
	if b.busybox == "" {
		return nil, errors.New("no busybox: apt-get install busybox-static")
	}
	return b, nil
}

// labRunsInTests says whether the lab step leaves the scenarios to the lab
// package's TestScenarios, which runs every one of them with more checks
// than lab run makes and tells each one's result (TCPWATCH_LAB_RESULTS):
// running them twice would double the guest's lab time for nothing. A
// filter on scenarios or tests, or a repeat count, is someone chasing one
// case: the steps then run as asked. tests are the guest's PKG=DIR pairs.
func labRunsInTests(c *config, steps map[string]bool, tests []string) bool {
	return steps["lab"] && steps["tests"] && slices.Contains(tests, "lab=/src/lab") &&
		c.scenarios == "" && c.testRun == "" && c.testCount == 1
}

// makeImage builds the initramfs of one kernel.
func makeImage(c *config, k *Kernel, b *binaries, img string, steps map[string]bool) error {
	dir, err := k.modulesDir()
	if err != nil {
		return err
	}
	mods, builtins, err := resolveModules(dir, labModules)
	if err != nil {
		return err
	}
	var names, paths []string
	for _, m := range mods {
		names = append(names, m.name)
		paths = append(paths, m.path)
	}
	logf("%s: modules %s (built in: %s)", k.Release, strings.Join(names, " "), strings.Join(builtins, " "))
	// PID 1 is busybox init, which reaps orphans as a real init does (a
	// shell as PID 1 leaves them zombies, and tests that wait for a killed
	// process to go away would time out); it runs the plan as sysinit.
	files := []guestFile{
		{path: "etc/inittab", perm: 0o644, data: []byte("::sysinit:/etc/run-plan\n")},
		{path: "etc/run-plan", perm: 0o755, data: initScript},
		{path: "bin/tcpwatch", perm: 0o755, host: b.tcpwatch},
	}
	var tests []string
	for _, t := range b.tests {
		if c.tests != "" && !strings.Contains(" "+c.tests+" ", " "+t.pkg+" ") {
			continue
		}
		files = append(files, guestFile{path: "tests/" + filepath.Base(t.file), perm: 0o755, host: t.file})
		gdir := "/src/" + t.pkg
		files = append(files, guestFile{path: "src/" + t.pkg + "/.keep", perm: 0o644})
		tests = append(tests, t.pkg+"="+gdir)
	}
	if len(tests) > 0 {
		files = append(files, b.testdata...)
	}
	labInTests := ""
	if labRunsInTests(c, steps, tests) {
		labInTests = "1"
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	flagIf := func(s string) string {
		if steps[s] {
			return "1"
		}
		return ""
	}
	plan := fmt.Sprintf("MODULES=%s\nSTEP_CHECK=%s\nSTEP_LAB=%s\nSTEP_TESTS=%s\nSCENARIOS=%s\nLAB_TIMEOUT=%s\nLAB_IN_TESTS=%s\nTESTS=%s\nTEST_TIMEOUT=%s\nTEST_ARGS=%s\n",
		q(strings.Join(paths, " ")), flagIf("check"), flagIf("lab"), flagIf("tests"), q(c.scenarios), q(c.labTO), labInTests, q(strings.Join(tests, " ")), q(c.testTO),
		q(testArgs(c.testRun, c.testCount)))
	files = append(files, guestFile{path: "etc/plan", perm: 0o644, data: []byte(plan)},
		guestFile{path: "etc/hostname", perm: 0o644, data: []byte("tcpwatch-guest\n")},
		guestFile{path: "etc/passwd", perm: 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		guestFile{path: "etc/group", perm: 0o644, data: []byte("root:x:0:\nnogroup:x:65534:\n")})
	logf("%s: building %s", k.Release, img)
	return buildInitramfs(img, files, mods, b.busybox, c.arch.deb != hostDebArch())
}
