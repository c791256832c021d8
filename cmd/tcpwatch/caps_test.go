package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
)

// startCaps is the documented start-up set (docs/safety.md), in setpriv's words.
const startCaps = "+bpf,+perfmon,+syslog,+sys_admin,+sys_ptrace,+dac_read_search"

// keptMask is CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21).
const keptMask = "0000000000280004"

// buildNoCgo builds the real tcpwatch without cgo (a cgo binary cannot
// change the capabilities of every thread) where nobody can run it.
func buildNoCgo(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir, err := os.MkdirTemp("", "tcpwatch-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	exe := filepath.Join(dir, "tcpwatch")
	build := exec.Command(gobin, "build", "-o", exe, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

// procStatus reads the capability lines of every thread of pid.
func procStatus(t *testing.T, pid int) (main map[string]string, threads []map[string]string) {
	t.Helper()
	read := func(path string) map[string]string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				m[k] = strings.TrimSpace(v)
			}
		}
		return m
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, p := range tasks {
		threads = append(threads, read(p))
	}
	return read(fmt.Sprintf("/proc/%d/status", pid)), threads
}

// watchRefused runs cmd (a tcpwatch -o json --duration 4s), reads its
// capabilities once it is up, makes a loopback connection nothing answers,
// and returns the status and the connect_refused narratives told.
func watchRefused(t *testing.T, cmd *exec.Cmd) (map[string]string, []map[string]string, []narrativeJSON, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	// setpriv execs tcpwatch: same pid.
	status, threads := procStatus(t, cmd.Process.Pid)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("%s answered", addr)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tcpwatch: %v: %s", err, stderr.String())
	}
	var refused []narrativeJSON
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var n narrativeJSON
		if json.Unmarshal(sc.Bytes(), &n) == nil && n.Type == "narrative" && n.Verdict == "connect_refused" &&
			fmt.Sprintf("%s:%d", n.RAddr, n.RPort) == addr {
			refused = append(refused, n)
		}
	}
	return status, threads, refused, stderr.String()
}

// Issue #10.7: once attached, tcpwatch keeps only CAP_SYS_ADMIN,
// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, on every thread, and still
// narrates.
func TestCapabilitiesDroppedAfterStart(t *testing.T) {
	testkit.RequirePrivileged(t)
	exe := buildNoCgo(t)
	status, threads, refused, stderr := watchRefused(t, exec.Command(exe, "-o", "json", "--duration", "4s"))
	want := map[string]string{"CapEff": keptMask, "CapPrm": keptMask, "CapInh": "0000000000000000",
		"CapAmb": "0000000000000000", "CapBnd": keptMask, "NoNewPrivs": "1"}
	for k, v := range want {
		if status[k] != v {
			t.Errorf("%s: %s, want %s", k, status[k], v)
		}
	}
	for _, th := range threads {
		if th["CapEff"] != keptMask || th["CapPrm"] != keptMask {
			t.Errorf("thread %s: CapEff %s CapPrm %s", th["Pid"], th["CapEff"], th["CapPrm"])
		}
	}
	if len(refused) != 1 || refused[0].PID != uint32(os.Getpid()) {
		t.Errorf("connect_refused told %d times (%+v); stderr %s", len(refused), refused, stderr)
	}
	if strings.Contains(stderr, "capabilities not dropped") {
		t.Errorf("stderr: %s", stderr)
	}
}

// Started as nobody with exactly the documented start-up set, tcpwatch
// runs, drops to the kept set and narrates.
func TestRunsWithTheStartUpSetOnly(t *testing.T) {
	testkit.RequirePrivileged(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed")
	}
	exe := buildNoCgo(t)
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all,"+startCaps, "--ambient-caps="+startCaps, "--bounding-set=-all,"+startCaps,
		exe, "-o", "json", "--duration", "4s")
	status, _, refused, stderr := watchRefused(t, cmd)
	if status["Uid"] != "65534\t65534\t65534\t65534" || status["CapEff"] != keptMask || status["CapPrm"] != keptMask {
		t.Errorf("Uid %q CapEff %s CapPrm %s", status["Uid"], status["CapEff"], status["CapPrm"])
	}
	if len(refused) != 1 {
		t.Errorf("connect_refused told %d times; stderr %s", len(refused), stderr)
	}
	for _, bad := range []string{"not permitted", "not watching", "capabilities not dropped"} {
		if strings.Contains(stderr, bad) {
			t.Errorf("stderr: %s", stderr)
		}
	}
}
