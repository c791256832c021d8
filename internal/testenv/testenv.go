// Package testenv decides whether a test that needs the real kernel may run.
package testenv

import (
	"os"
	"testing"
)

// RequirePrivileged skips a test that needs root on a developer's machine
// without it, and fails it in CI, where a skipped tracer test would hide a
// broken feature.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("privileged test: skipped with -short")
	}
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("privileged test cannot run: CI must run the suite as root")
	}
	t.Skip("privileged test: needs root (run make test)")
}
