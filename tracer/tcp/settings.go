package tcp

import "time"

// Settings are the knobs that decide when the kernel gives up, as they were
// for this socket at the moment of the event.
type Settings struct {
	Retries2        uint8
	SynRetries      uint8
	KeepaliveOn     bool
	KeepaliveTime   time.Duration
	KeepaliveIntvl  time.Duration
	KeepaliveProbes uint8
	UserTimeout     time.Duration
}
