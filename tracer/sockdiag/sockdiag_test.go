package sockdiag

import (
	"testing"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// A connection made before the snapshot is found, with its owner (us).
func TestSnapshotFindsOwnConnection(t *testing.T) {
	testkit.RequirePrivileged(t)
	c, _ := testkit.Loopback(t)
	socks, err := Snapshot(0)
	if err != nil {
		t.Logf("snapshot warnings: %v", err)
	}
	for _, s := range socks {
		if s.Local.String() == c.LocalAddr().String() && s.Remote.String() == c.RemoteAddr().String() {
			if s.State != tcp.StateEstablished || s.Cookie == 0 || s.NetNS == 0 {
				t.Errorf("socket %+v", s)
			}
			if s.Comm == "" || s.PID == 0 {
				t.Errorf("owner not found: %+v", s)
			}
			if s.Settings.Retries2 == 0 || s.Settings.KeepaliveTime == 0 {
				t.Errorf("settings not read: %+v", s.Settings)
			}
			return
		}
	}
	t.Fatalf("connection %v -> %v not in the snapshot of %d sockets", c.LocalAddr(), c.RemoteAddr(), len(socks))
}
