package testkit

import (
	"os"
	"strconv"
	"testing"
)

// InCI says whether the suite runs in CI (CI set to a true value: "true",
// "1", …; "false" or empty is a developer's machine).
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// RequirePrivileged skips a test that needs root on a developer's machine
// without it (or under -short), and fails it in CI, where a skipped tracer
// test would hide a broken feature: CI can never skip one, not even with
// -short.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if InCI() {
		if os.Geteuid() != 0 {
			t.Fatal("privileged test cannot run: CI must run the suite as root")
		}
		return
	}
	if testing.Short() {
		t.Skip("privileged test: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("privileged test: needs root (run make test)")
	}
}
