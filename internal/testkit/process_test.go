package testkit

import (
	"io"
	"os/exec"
	"testing"
	"time"
)

// A process's lines come in order, its standard input reaches it, its
// standard error is kept, and its end is seen.
func TestStart(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", `echo ready; read x; echo "got $x"; echo oops >&2`), true)
	if l := <-p.Lines; l != "ready" {
		t.Fatalf("first line %q", l)
	}
	io.WriteString(p.Stdin, "ping\n")
	if l := <-p.Lines; l != "got ping" {
		t.Errorf("second line %q", l)
	}
	select {
	case <-p.Exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the end of the process was not seen")
	}
	if _, open := <-p.Lines; open {
		t.Error("Lines still open after the process ended")
	}
	if p.Stderr.String() != "oops\n" {
		t.Errorf("stderr %q", p.Stderr.String())
	}
}

// A process still running when the test ends is killed, even one that
// writes more than anyone reads.
func TestStartKillsAtCleanup(t *testing.T) {
	var p *Process
	t.Run("inner", func(t *testing.T) {
		p = Start(t, exec.Command("yes"), false)
		<-p.Lines
	})
	select {
	case <-p.Exited:
	default:
		t.Fatal("the process outlived its test")
	}
}
