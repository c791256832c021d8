package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
)

// A tracer never changes what it observes: tcpwatch learns the owners of
// connections that predate it from /proc, and never takes another
// process's descriptor (pidfd_getfd would pin the socket and rewrite its
// cgroup v1 classid). The run is traced with strace: neither pidfd_open
// nor pidfd_getfd may appear, though a connection existed before it.
func TestNeverTakesAnotherProcessDescriptor(t *testing.T) {
	testkit.RequirePrivileged(t)
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is missing: make deps installs it")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	trace := filepath.Join(t.TempDir(), "strace.out")
	cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=pidfd_open,pidfd_getfd,setns", "-o", trace,
		exe, "--duration", "2s", "-o", "json")
	cmd.Env = append(os.Environ(), "TCPWATCH_MAIN=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tcpwatch under strace: %v\n%s", err, out)
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	calls := string(b)
	if strings.Contains(calls, "pidfd_getfd(") || strings.Contains(calls, "pidfd_open(") {
		t.Errorf("tcpwatch took another process's descriptor:\n%s", calls)
	}
	// Positive control: the trace saw tcpwatch's own start-up work, its
	// visits to each namespace's socket table.
	if !strings.Contains(calls, "setns(") {
		t.Errorf("strace saw no setns: the trace did not follow tcpwatch (%q)", calls)
	}
}
