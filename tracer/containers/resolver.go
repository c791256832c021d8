package containers

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNoCgroup2 means no cgroup v2 hierarchy is mounted: cgroup ids name
// nothing that can be read.
var ErrNoCgroup2 = errors.New("no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo)")

// FindMount returns where the cgroup v2 hierarchy is mounted:
// /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid
// one. A mount of the hierarchy's root is preferred over one of a subtree
// (a container's own cgroup namespace).
func FindMount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	best, bestRoot := "", ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			continue
		}
		root, mnt := unescape(f[3]), unescape(f[4])
		if best == "" || (root == "/" && bestRoot != "/") {
			best, bestRoot = mnt, root
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if best == "" {
		return "", ErrNoCgroup2
	}
	return best, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := (int(s[i+1]-'0') << 6) | (int(s[i+2]-'0') << 3) | int(s[i+3]-'0')
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Resolver turns cgroup ids into Info. It walks the hierarchy once at the
// first lookup and again on a miss, at most once per MinRewalk, and keeps
// what it found (also for cgroups removed since: the connections of a
// container that just died are the ones worth naming) up to MaxEntries.
// It is safe for concurrent use.
type Resolver struct {
	root string
	// MinRewalk is the least time between two walks (default 2s): a
	// burst of connections from unknown cgroups costs one walk.
	MinRewalk time.Duration
	// MaxEntries bounds the cache (default 65536 cgroups).
	MaxEntries int

	mu       sync.Mutex
	byID     map[uint64]Info
	lastWalk time.Time
	walks    int
	now      func() time.Time
}

// NewResolver reads the cgroup v2 hierarchy mounted at root.
func NewResolver(root string) *Resolver {
	return &Resolver{root: root, MinRewalk: 2 * time.Second, MaxEntries: 1 << 16, now: time.Now}
}

// Walks says how many times the hierarchy was walked (for tests).
func (r *Resolver) Walks() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.walks
}

// Lookup returns what the cgroup with this id says; Info{} when id is 0
// or no cgroup has it (yet).
func (r *Resolver) Lookup(id uint64) Info {
	if r == nil || id == 0 {
		return Info{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if info, ok := r.byID[id]; ok {
		return info
	}
	if r.byID != nil && r.now().Sub(r.lastWalk) < r.MinRewalk {
		return Info{}
	}
	r.walk()
	return r.byID[id]
}

// walk reads every directory of the hierarchy: its inode is its cgroup id.
func (r *Resolver) walk() {
	r.walks++
	r.lastWalk = r.now()
	fresh := make(map[uint64]Info, len(r.byID))
	_ = filepath.WalkDir(r.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			// A cgroup removed while walking: skip it, keep the rest.
			if d != nil && d.IsDir() && path != r.root {
				return fs.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		if len(fresh) >= r.MaxEntries {
			return fs.SkipAll
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel := strings.TrimPrefix(path, r.root)
		if rel == "" {
			rel = "/"
		}
		if old, ok := r.byID[st.Ino]; ok && old.Path == rel {
			fresh[st.Ino] = old
		} else {
			fresh[st.Ino] = Parse(rel)
		}
		return nil
	})
	// Keep cgroups that went away since, while there is room.
	for id, info := range r.byID {
		if len(fresh) >= r.MaxEntries {
			break
		}
		if _, ok := fresh[id]; !ok {
			fresh[id] = info
		}
	}
	r.byID = fresh
}
