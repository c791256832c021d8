// Package netnsexec runs code inside another network namespace, on an OS
// thread of its own, and leaves no thread behind in the wrong namespace:
// the lab's netlab and sock_diag's per-namespace dumps share it.
package netnsexec

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that has been moved into the namespace
// pinned at path. It uses a goroutine of its own so the thread can be thrown
// away if moving it back fails: a goroutine that exits while still locked to
// its thread makes the Go runtime terminate that thread.
func Do(path string, fn func() error) error {
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", path, err)
	}
	defer unix.Close(target)

	var (
		result   error
		panicked bool
		panicVal any
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			result = fmt.Errorf("opening this thread's namespace: %w", err)
			return
		}
		defer unix.Close(home)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			result = fmt.Errorf("entering namespace %s: %w", path, err)
			return
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					panicked, panicVal = true, p
				}
			}()
			result = fn()
		}()
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			return // still locked: the runtime kills this thread
		}
		runtime.UnlockOSThread()
	}()
	<-done
	if panicked {
		panic(panicVal)
	}
	return result
}
