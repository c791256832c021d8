// Package cgroups makes real cgroup v2 directories for privileged
// tests, under a parent the test owns (tcpwatch-test-*), and removes them
// afterwards.
package cgroups

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/containers"
)

// Cgroup is one directory of the test's hierarchy.
type Cgroup struct {
	Dir  string // absolute, under the cgroup v2 mount
	Path string // from the hierarchy's root, as tcpwatch reports it
	ID   uint64 // the directory's inode: the kernel's cgroup id
}

// Parent makes /<mount>/tcpwatch-test-<random> and removes it (and every
// cgroup made under it) when the test ends.
func Parent(t testing.TB) (mount string, parent Cgroup) {
	t.Helper()
	mount, err := containers.FindMount()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(mount, "tcpwatch-test-")
	if err != nil {
		t.Fatalf("making a cgroup under %s: %v", mount, err)
	}
	t.Cleanup(func() { removeTree(t, dir) })
	return mount, at(t, mount, dir)
}

// Make creates the cgroup rel (slash-separated, parents too) under parent.
func Make(t testing.TB, mount string, parent Cgroup, rel string) Cgroup {
	t.Helper()
	dir := filepath.Join(parent.Dir, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("making cgroup %s: %v", dir, err)
	}
	return at(t, mount, dir)
}

func at(t testing.TB, mount, dir string) Cgroup {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return Cgroup{Dir: dir, Path: strings.TrimPrefix(dir, mount), ID: st.Ino}
}

// Start starts cmd directly inside cg (clone3 with CLONE_INTO_CGROUP):
// every socket it creates belongs to cg from its first syscall.
func Start(t testing.TB, cg Cgroup, cmd *exec.Cmd) {
	t.Helper()
	fd, err := syscall.Open(cg.Dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = fd
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v in %s: %v", cmd.Args, cg.Dir, err)
	}
}

// MoveSelf moves this whole process into cg and returns the function
// that moves it back to where it was.
func MoveSelf(t testing.TB, mount string, cg Cgroup) (back func()) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	orig := ""
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			orig = filepath.Join(mount, p)
		}
	}
	if orig == "" {
		t.Fatal("this process has no cgroup v2 path in /proc/self/cgroup")
	}
	move := func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte("0"), 0)
	}
	if err := move(cg.Dir); err != nil {
		t.Fatalf("moving into %s: %v", cg.Dir, err)
	}
	return func() {
		if err := move(orig); err != nil {
			t.Errorf("moving back to %s: %v", orig, err)
		}
	}
}

// removeTree removes cgroup directories deepest first (rmdir is the only
// way to remove a cgroup); a cgroup whose processes are still exiting is
// retried for a moment.
func removeTree(t testing.TB, root string) {
	var dirs []string
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		var err error
		for range 50 {
			if err = syscall.Rmdir(dirs[i]); err == nil || os.IsNotExist(err) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil && !os.IsNotExist(err) {
			t.Errorf("removing cgroup %s: %v", dirs[i], err)
		}
	}
}
