package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// `tcpwatch lab cleanup` removes the directory of a run that was killed
// (#10.9: it was left in /tmp), and only those: a live run's stays, and
// so does a directory it cannot tell is a lab's.
func TestCleanupRemovesKilledRunsDirectory(t *testing.T) {
	tmp := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	mk := func(name, marker string) string {
		p := filepath.Join(tmp, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/proc/self/exe", filepath.Join(p, "lab-client")); err != nil {
			t.Fatal(err)
		}
		if marker != "" {
			if err := os.WriteFile(filepath.Join(p, agentDirMarker), []byte(marker+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	ourStart, err := processStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	killed := mk(fmt.Sprintf("%s%d-123", agentDirPrefix, dead.Process.Pid), "1")
	reused := mk(fmt.Sprintf("%s%d-456", agentDirPrefix, os.Getpid()), "1") // our pid, another process's start
	live := mk(fmt.Sprintf("%s%d-789", agentDirPrefix, os.Getpid()), ourStart)
	foreign := mk(agentDirPrefix+"notapid", "")

	removed, err := cleanupAgentDirs(tmp)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	want := []string{killed, reused}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	for _, p := range want {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there", p)
		}
	}
	for _, p := range []string{live, foreign} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}
