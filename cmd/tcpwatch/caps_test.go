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

	"github.com/tcpwatch/tcpwatch/internal/testkit"
)

// startCaps is the documented start-up set (README, Safety), in setpriv's words.
const startCaps = "+bpf,+perfmon,+syslog,+sys_admin,+sys_ptrace,+dac_read_search"

// keptMask is CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21).
const keptMask = "0000000000280004"

// buildTcpwatch builds the real tcpwatch with cgo on ("1", as go install
// does wherever a C compiler is found) or off ("0", as make build and the
// release do), where nobody can run it, and checks the binary says so.
func buildTcpwatch(t *testing.T, cgo string) string {
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
	build.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build (CGO_ENABLED=%s; cgo needs gcc): %v\n%s", cgo, err, out)
	}
	info, err := exec.Command(gobin, "version", "-m", exe).Output()
	if err != nil || !strings.Contains(string(info), "CGO_ENABLED="+cgo) {
		t.Fatalf("go version -m %s: %v, no CGO_ENABLED=%s in\n%s", exe, err, cgo, info)
	}
	return exe
}

func buildNoCgo(t *testing.T) string { return buildTcpwatch(t, "0") }

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
	// setpriv execs tcpwatch: same pid. Attached and its capabilities
	// dropped, not a fixed wait: on a loaded machine start-up took over
	// 2 s, and the connect came before the programs (told 0 times).
	waitRunning(t, cmd.Process.Pid)
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

// Issues #10.7 and #21: once attached, tcpwatch keeps only CAP_SYS_ADMIN,
// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, on every thread, and still
// narrates, whether it was built with cgo or without.
func TestCapabilitiesDroppedAfterStart(t *testing.T) {
	testkit.RequirePrivileged(t)
	for _, cgo := range []string{"1", "0"} {
		t.Run("CGO_ENABLED="+cgo, func(t *testing.T) {
			exe := buildTcpwatch(t, cgo)
			status, threads, refused, stderr := watchRefused(t, exec.Command(exe, "-o", "json", "--duration", "4s"))
			want := map[string]string{"CapEff": keptMask, "CapPrm": keptMask, "CapInh": "0000000000000000",
				"CapAmb": "0000000000000000", "CapBnd": keptMask, "NoNewPrivs": "1"}
			for k, v := range want {
				if status[k] != v {
					t.Errorf("%s: %s, want %s", k, status[k], v)
				}
			}
			if len(threads) < 2 {
				t.Errorf("%d threads read: a Go program has several", len(threads))
			}
			for _, th := range threads {
				for k, v := range want {
					if th[k] != v {
						t.Errorf("thread %s: %s %s, want %s", th["Pid"], k, th[k], v)
					}
				}
			}
			if len(refused) != 1 || refused[0].PID != uint32(os.Getpid()) {
				t.Errorf("connect_refused told %d times (%+v); stderr %s", len(refused), refused, stderr)
			}
			if stderr != "" {
				t.Errorf("stderr: %s", stderr)
			}
		})
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
