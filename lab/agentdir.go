package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The lab names its applications after their roles through symlinks in a
// directory of its own under the temporary directory:
// tcpwatch-lab-<pid>-<random>, with the run's process start time in a
// marker file. A run killed by SIGKILL never removes it; Cleanup does,
// once the process that made it is gone (or its pid belongs to another
// process now: the start times differ).

const (
	agentDirPrefix = "tcpwatch-lab-"
	agentDirMarker = ".owner" // the owning process's start time, from /proc/PID/stat
)

// makeAgentDir creates this run's directory and its marker.
func makeAgentDir() (string, error) {
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", agentDirPrefix, os.Getpid()))
	if err != nil {
		return "", err
	}
	start, err := processStart(os.Getpid())
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, agentDirMarker), []byte(start+"\n"), 0o644)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// cleanupAgentDirs removes the directories under tmp of lab runs whose
// process is gone.
func cleanupAgentDirs(tmp string) (removed []string, err error) {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, agentDirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, perr := strconv.Atoi(pidText)
		if !ok || perr != nil || pid <= 0 {
			continue // not one of ours (or from a version without the pid): leave it
		}
		path := filepath.Join(tmp, name)
		if ownerAlive(pid, path) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
			continue
		}
		removed = append(removed, path)
	}
	return removed, errors.Join(errs...)
}

// ownerAlive says whether the run that made dir still runs: its pid exists
// and, when the marker says when it started, it is the same process.
func ownerAlive(pid int, dir string) bool {
	if err := unix.Kill(pid, 0); err != nil && !errors.Is(err, unix.EPERM) {
		return false
	}
	marker, err := os.ReadFile(filepath.Join(dir, agentDirMarker))
	if err != nil {
		return true // no marker: the pid alone says it may be alive
	}
	start, err := processStart(pid)
	return err != nil || start == strings.TrimSpace(string(marker))
}

// processStart is a process's start time in clock ticks since boot (field
// 22 of /proc/PID/stat): with the pid, it names one process for good.
func processStart(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// fields after its closing parenthesis.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return "", errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", errors.New("malformed /proc stat")
	}
	return f[19], nil // field 22: fields after ')' start at field 3
}
