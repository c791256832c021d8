//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/netnsexec"
)

// createNamedNetns makes a new network namespace and pins it with a bind
// mount at path, like `ip netns add`. It fails with an error wrapping
// os.ErrExist if path is taken.
func createNamedNetns(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread goes back to its namespace afterwards and stays in
		// service. Letting it die instead would be dangerous: the runtime
		// may have forked a Command child from this very thread earlier,
		// and Pdeathsig would then SIGKILL that child with the thread.
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening this thread's namespace: %w", err)
			return
		}
		defer unix.Close(home)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		err = unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
		if err != nil {
			err = fmt.Errorf("bind mount %s: %w", path, err)
		}
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else: still locked, the runtime retires the thread
		errc <- err
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// deleteNamedNetns undoes createNamedNetns. The namespace itself lives on
// until its last process, socket or open handle is gone. A missing path is not
// an error, so teardown can be repeated.
func deleteNamedNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netlab: unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netlab: %w", err)
	}
	return nil
}

// doInNetns runs fn on an OS thread moved into the namespace pinned at
// path (internal/netnsexec).
func doInNetns(path string, fn func() error) error { return netnsexec.Do(path, fn) }

// writeSysctl writes /proc/sys/<key>. Under /proc/sys/net the kernel picks
// the namespace of the calling thread, so inside doInNetns this sets the
// namespace's own value.
func writeSysctl(key, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	return string(trimNewline(b)), err
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// netnsID identifies a network namespace as the kernel does: the nsfs device
// and inode that /proc/PID/ns/net, a bind mount of it, or `ip netns identify`
// all resolve to.
type netnsID struct{ dev, ino uint64 }

func netnsIDOf(path string) (netnsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return netnsID{}, err
	}
	return netnsID{dev: st.Dev, ino: st.Ino}, nil
}

// killNetnsProcesses SIGKILLs every process (other than this one) whose
// network namespace is id, or that Host.Command started for the namespace
// pinned at path but that has not entered it yet, and waits until they have
// exited. The second kind matters: cmd.Start returns before the child joins
// its namespace, and a child that already opened the path would otherwise
// slip into the old namespace after the scan, or into the new one after a
// Reboot. It works through pidfds, so a pid recycled between the scan and
// the kill is never hit, and it rescans until nothing is left, to catch
// children forked meanwhile, and while any process is mid-exec (see midExec).
// Processes that exited but were not yet reaped
// (zombies) no longer hold the namespace and are ignored; reaping stays with
// their parent (exec.Cmd.Wait).
func killNetnsProcesses(id netnsID, path string) error {
	deadline := time.Now().Add(10 * time.Second)
	self := os.Getpid()
	for {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return err
		}
		var pidfds []int
		unsettled := false
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				continue
			}
			// Checked after opening the pidfd, so this is the process the fd names.
			if !inNetns(pid, id) && !enteringNetns(pid, path) {
				unsettled = unsettled || midExec(pid)
				unix.Close(fd)
				continue
			}
			if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				unix.Close(fd)
				closeAll(pidfds)
				return fmt.Errorf("killing pid %d: %w", pid, err)
			}
			pidfds = append(pidfds, fd)
		}
		if len(pidfds) == 0 && !unsettled {
			return nil
		}
		if len(pidfds) == 0 {
			// Someone is between exec and its arguments: look again.
			if time.Now().After(deadline) {
				return errors.New("a process stayed mid-exec for 10s")
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		for _, fd := range pidfds {
			// A pidfd polls readable once its process has exited.
			for {
				left := time.Until(deadline)
				if left <= 0 {
					closeAll(pidfds)
					return errors.New("processes in the namespace did not die within 10s")
				}
				n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left/time.Millisecond)+1)
				if err == nil && n > 0 || err != nil && !errors.Is(err, unix.EINTR) {
					break
				}
			}
		}
		closeAll(pidfds)
	}
}

func inNetns(pid int, id netnsID) bool {
	got, err := netnsIDOf(fmt.Sprintf("/proc/%d/ns/net", pid))
	return err == nil && got == id
}

// enteringNetns reports whether pid is a Command child still on its way into
// the namespace at path (argv is [nsexecArg0, path, ...] until it execs).
func enteringNetns(pid int, path string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv := strings.SplitN(string(b), "\x00", 3)
	return len(argv) == 3 && argv[0] == nsexecArg0 && argv[1] == path
}

// midExec reports whether pid is a process in the middle of an execve: its
// new program is mapped (it has an executable) but its arguments are not
// yet, so it has no cmdline. cmd.Start returns in that window (the exec
// "succeeded" once the close-on-exec pipe closed, before the arguments are
// set up), and a Command child there is neither in its namespace nor
// recognisable by its argv yet. Kernel threads and zombies have no
// executable; a program run with an empty argv still has a cmdline of one
// NUL byte.
func midExec(pid int) bool {
	if _, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && len(b) == 0
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
