package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// With --all or --events the output pipe is made big enough that a batch
// of lines does not wait for the reader (growOutputPipe); anything else
// is left alone.
func TestGrowOutputPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	before, err := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if before >= floodPipeSize {
		t.Fatalf("a new pipe holds %d bytes already: nothing to test", before)
	}
	growOutputPipe(w)
	after, err := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if after != floodPipeSize {
		t.Errorf("pipe holds %d bytes after growOutputPipe, want %d (it held %d)", after, floodPipeSize, before)
	}

	// A file and a writer that is not a file are left as they are.
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	growOutputPipe(f)
	if _, err := f.WriteString("x\n"); err != nil {
		t.Errorf("writing the file after growOutputPipe: %v", err)
	}
	var buf bytes.Buffer
	growOutputPipe(&buf)
}
