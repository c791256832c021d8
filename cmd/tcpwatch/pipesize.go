package main

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// floodPipeSize is the pipe buffer tcpwatch asks for when its output is a
// pipe and records flood in (--all, --events under churn).
const floodPipeSize = 1 << 20

// growOutputPipe enlarges the pipe out writes to, if it is one, so that a
// batch of lines (output.Options.Batch, up to 64 KiB a write) fits while
// the reader is behind by a batch or two: with the default 64 KiB pipe a
// write blocks until the reader has taken almost everything, and each
// block costs a context switch, the reader's wake-up, and Go's scheduler
// handing the engine's processor to another thread and back. Best effort:
// the size is the reader's pipe too (a bigger buffer, nothing else), and
// where the system's limit (fs.pipe-max-size, for a process without
// CAP_SYS_RESOURCE) refuses it the pipe stays as it was.
func growOutputPipe(out io.Writer) {
	f, ok := out.(*os.File)
	if !ok {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	size, err := unix.FcntlInt(f.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil || size >= floodPipeSize {
		return
	}
	_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, floodPipeSize)
}
