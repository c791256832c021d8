package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/psx"
)

// Capabilities. To start, tcpwatch needs CAP_BPF and CAP_PERFMON (load and
// attach tracing programs, read kernel memory from them), CAP_SYSLOG only
// where kernel.kptr_restrict hides /proc/kallsyms from others (the timer
// hooks' addresses), and what it keeps afterwards. Once its programs are
// attached it keeps only:
//
//	CAP_SYS_ADMIN        setns(2) into other network namespaces, to read their
//	                     socket tables (sock_diag) at start-up and every 10 s
//	CAP_SYS_PTRACE       /proc/PID/ns/net and /proc/PID/fd/* of other users' processes
//	CAP_DAC_READ_SEARCH  list /proc/PID/fd of other users' processes
//
// Everything else is dropped from every thread: effective, permitted,
// inheritable and ambient sets, and, when CAP_SETPCAP allows it, the
// bounding set; no_new_privs is set. Reading the ring buffer, the loss
// counters and the programs' statistics works on the descriptors tcpwatch
// already holds and needs none.
var keptCaps = []int{unix.CAP_SYS_ADMIN, unix.CAP_SYS_PTRACE, unix.CAP_DAC_READ_SEARCH}

func kept(c int) bool {
	for _, k := range keptCaps {
		if k == c {
			return true
		}
	}
	return false
}

// dropCapabilities keeps only keptCaps, on every thread of the process.
func dropCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var cur [2]unix.CapUserData
	if err := unix.Capget(&hdr, &cur[0]); err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	has := func(set func(*unix.CapUserData) uint32, c int) bool { return set(&cur[c/32])&(1<<(c%32)) != 0 }
	effective := func(d *unix.CapUserData) uint32 { return d.Effective }
	permitted := func(d *unix.CapUserData) uint32 { return d.Permitted }

	// Every thread holds its own capability sets: a change made on one
	// thread only leaves the others (and any the Go runtime moves work
	// to) as privileged as before. psx makes each call on every thread:
	// without cgo through syscall.AllThreadsSyscall, with cgo (which
	// AllThreadsSyscall refuses, C threads being out of Go's reach)
	// through libpsx, which signals each thread to make it.
	// Syscall6 with zeros: prctl refuses (EINVAL) options whose unused
	// arguments are not 0, and libpsx's Syscall3 leaves the last two to
	// whatever the registers hold.
	all := func(trap, a1, a2, a3 uintptr) error {
		if _, _, errno := psx.Syscall6(trap, a1, a2, a3, 0, 0, 0); errno != 0 {
			return errno
		}
		return nil
	}
	// The bounding set limits what an execve could regain; dropping from
	// it needs CAP_SETPCAP, which is then dropped too.
	if has(effective, unix.CAP_SETPCAP) {
		for c := 0; c <= capLastCap(); c++ {
			if kept(c) {
				continue
			}
			if err := all(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); err != nil {
				return fmt.Errorf("dropping capability %d from the bounding set: %w", c, err)
			}
		}
	}
	if err := all(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("clearing the ambient capabilities: %w", err)
	}
	if err := all(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
		return fmt.Errorf("setting no_new_privs: %w", err)
	}
	var next [2]unix.CapUserData
	for _, c := range keptCaps {
		if has(permitted, c) {
			next[c/32].Permitted |= 1 << (c % 32)
			next[c/32].Effective |= 1 << (c % 32)
		}
	}
	err := all(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&next[0])), 0)
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&next)
	if err != nil {
		return fmt.Errorf("setting capabilities: %w", err)
	}
	return nil
}

// capLastCap is the highest capability the kernel knows.
func capLastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 40 // CAP_CHECKPOINT_RESTORE, Linux 5.9
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 40
	}
	return n
}
