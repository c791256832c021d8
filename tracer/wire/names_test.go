package wire

import (
	"fmt"
	"testing"
)

// Names gives what Comm gives, for names that come back (remembered),
// names past its memory, the same name with other bytes after its NUL,
// and no name; a name that comes back is not made again.
func TestNamesComm(t *testing.T) {
	var names Names
	var ev Event
	for i := range 100 {
		ev.SetComm(fmt.Sprintf("proc-%d", i%(namesKept+3)))
		if i%7 == 0 {
			ev.comm[14] = byte(i) // bytes after the NUL: an earlier, longer name
		}
		if i%11 == 0 {
			ev.comm = [16]byte{}
		}
		if got, want := names.Comm(&ev), ev.Comm(); got != want {
			t.Fatalf("%d: %q, want %q", i, got, want)
		}
	}
	ev.SetComm("churn")
	names.Comm(&ev)
	if allocs := testing.AllocsPerRun(100, func() { names.Comm(&ev) }); allocs != 0 {
		t.Errorf("a remembered name made %v times", allocs)
	}
}

// Thread is "" when the thread's name is the process's, whatever follows
// either's NUL, and when there is none.
func TestThreadOfEvent(t *testing.T) {
	for _, c := range []struct{ comm, thread, tail, want string }{
		{"redis-server", "redis-server", "", ""},
		{"redis-server", "io_thd_1", "", "io_thd_1"},
		{"redis-server", "", "", ""},
		{"", "", "", ""},
		{"sshd", "sshd", "xx", ""},
		{"sshd", "ssh", "d", "ssh"},
	} {
		var ev Event
		ev.SetComm(c.comm)
		ev.SetThread(c.thread)
		copy(ev.thread[len(c.thread)+1:], c.tail)
		if got := ev.Thread(); got != c.want {
			t.Errorf("comm %q thread %q (then %q): %q, want %q", c.comm, c.thread, c.tail, got, c.want)
		}
	}
}
