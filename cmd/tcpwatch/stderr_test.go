package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Multi-line errors and warnings (the verifier's log, errors joined from
// several namespaces) keep "tcpwatch: " on every line (#10.9).
func TestLinePrefixer(t *testing.T) {
	var buf bytes.Buffer
	p := newLinePrefixer(&buf)
	verifier := errors.New("the kernel's verifier rejected a tcpwatch program (please report it with this output): permission denied\n0: R1=ctx() R10=fp0\n; int tw_set_state(...)\n\nprocessed 12 insns")
	fmt.Fprintf(p, "tcpwatch: %v\n", verifier)
	fmt.Fprintf(p, "tcpwatch: warning: %v\n", errors.Join(errors.New("netns 1: EPERM"), errors.New("netns 2: EPERM")))
	p.Write([]byte("half a "))
	p.Write([]byte("line\nand no newline"))
	p.Flush()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 9 {
		t.Errorf("%d lines, want 9:\n%s", len(lines), buf.String())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "tcpwatch: ") || strings.HasPrefix(l, "tcpwatch: tcpwatch: ") {
			t.Errorf("line %q", l)
		}
	}
	if !strings.Contains(buf.String(), "tcpwatch: half a line\ntcpwatch: and no newline\n") {
		t.Errorf("split writes: %q", buf.String())
	}
}

// The real command: whatever goes wrong, every stderr line is tcpwatch's;
// help, asked for, goes to stdout.
func TestEveryStderrLineIsPrefixed(t *testing.T) {
	for _, args := range [][]string{
		{"lab"}, {"lab", "run"}, {"lab", "run", "--bogus"}, {"lab", "teleport"}, {"--no-such-flag"},
		{"--help"}, {"lab", "--help"}, {"lab", "run", "--help"}, {"-o", "xml"},
	} {
		var stdout, stderr bytes.Buffer
		cmd := tcpwatch(t, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Run()
		for _, l := range strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n") {
			if l != "" && !strings.HasPrefix(l, "tcpwatch: ") {
				t.Errorf("%v: stderr line %q", args, l)
			}
		}
		if args[len(args)-1] == "--help" {
			if code := cmd.ProcessState.ExitCode(); code != 0 || stderr.Len() != 0 || !strings.Contains(stdout.String(), "Usage:") {
				t.Errorf("%v: exit %d, stderr %q, stdout %q", args, code, stderr.String(), stdout.String())
			}
		} else if n := strings.Count(stderr.String(), "\n"); n != 1 {
			t.Errorf("%v: %d stderr lines, want one: %q", args, n, stderr.String())
		}
	}
}
