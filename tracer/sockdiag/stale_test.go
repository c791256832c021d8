package sockdiag

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
)

// A name under /var/run/netns whose bind mount is gone is an empty file:
// it is no namespace, and reading sockets must not try to enter it (each
// start of tcpwatch warned "entering namespace …: invalid argument").
func TestStaleNetnsNameIsNoNamespace(t *testing.T) {
	testkit.RequirePrivileged(t)
	if err := os.MkdirAll("/var/run/netns", 0o755); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join("/var/run/netns", fmt.Sprintf("tcpwatch-stale-%d", os.Getpid()))
	if err := os.WriteFile(stale, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(stale) })
	var st unix.Stat_t
	if err := unix.Stat(stale, &st); err != nil {
		t.Fatal(err)
	}
	spaces, err := Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	if path, ok := spaces[uint32(st.Ino)]; ok {
		t.Errorf("the stale name %s is taken for namespace %d (%s)", stale, st.Ino, path)
	}
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		t.Fatal(err)
	}
	if _, ok := spaces[uint32(self.Ino)]; !ok {
		t.Errorf("this process's own namespace %d is missing from %v", self.Ino, spaces)
	}
}
