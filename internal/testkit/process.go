package testkit

import (
	"bufio"
	"bytes"
	"io"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// LockedBuffer collects a process's output while the test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Process is a program a test runs (a client, a server from Debian, a
// python3 script): its output line by line, its standard error kept for
// the failure's log.
type Process struct {
	*exec.Cmd
	Stdin  io.WriteCloser // nil unless asked for
	Lines  <-chan string  // standard output, closed at its end
	Stderr *LockedBuffer
	Exited <-chan struct{} // closed once the process was waited for
	// waitErr is what the one Wait of the process returned (see Wait).
	waitErr error
}

// Wait waits until the process has exited and been waited for, and
// returns what exec.Cmd.Wait returned. Start waits for the process itself:
// a second exec.Cmd.Wait would race it, and the loser can block forever
// (both reap, and only one receives the output copier's result).
func (p *Process) Wait() error {
	<-p.Exited
	return p.waitErr
}

// Start starts cmd with its standard output read line by line (and a pipe
// to its standard input when withStdin). When the test ends the process is
// killed and waited for, and its standard error logged if the test failed.
// Lines must be read: a program that writes more than a screenful nobody
// reads waits, as it would on a pipe.
func Start(tb testing.TB, cmd *exec.Cmd, withStdin bool) *Process {
	tb.Helper()
	p := &Process{Cmd: cmd, Stderr: &LockedBuffer{}}
	var err error
	if withStdin {
		if p.Stdin, err = cmd.StdinPipe(); err != nil {
			tb.Fatal(err)
		}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = p.Stderr
	// A descendant that outlives the process (or the process's own
	// threads, in states the kill does not reach at once) can hold its
	// standard error open: Wait would wait for the pipe forever, and the
	// test with it (a cleanup hung for 7 minutes once, until the
	// package's timeout). After the exit, the pipes get this long.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		tb.Fatalf("%s: %v", cmd.Path, err)
	}
	lines, exited := make(chan string, 64), make(chan struct{})
	p.Lines, p.Exited = lines, exited
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, out)
		p.waitErr = cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		go func() {
			for range lines {
			}
		}()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			// A child of the killed process still holds its output.
			out.Close()
			<-exited
		}
		if tb.Failed() {
			tb.Logf("%s stderr: %s", cmd.Path, p.Stderr.String())
		}
	})
	return p
}
