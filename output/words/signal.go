package words

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func unixSignalName(sig int) string { return unix.SignalName(syscall.Signal(sig)) }
