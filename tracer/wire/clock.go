package wire

import (
	"time"

	"golang.org/x/sys/unix"
)

// MonotonicNow reads CLOCK_MONOTONIC, the clock bpf_ktime_get_ns() uses.
func MonotonicNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}
