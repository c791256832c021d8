package containers

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	id1 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	id2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	uid = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
)

func TestParse(t *testing.T) {
	uidU := strings.ReplaceAll(uid, "-", "_")
	for _, tc := range []struct {
		path                string
		runtime, id, podUID string
	}{
		{"/", "", "", ""},
		{"/system.slice/sshd.service", "", "", ""},
		{"/user.slice/user-1000.slice/session-3.scope", "", "", ""},
		// Docker, systemd and cgroupfs drivers.
		{"/system.slice/docker-" + id1 + ".scope", "docker", id1, ""},
		{"/docker/" + id1, "docker", id1, ""},
		// A container's own sub-cgroups (systemd inside it, cgroupns).
		{"/system.slice/docker-" + id1 + ".scope/init.scope", "docker", id1, ""},
		// containerd through CRI, systemd driver, every QoS class.
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope", "containerd", id1, uid},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope", "containerd", id1, uid},
		{"/kubepods.slice/kubepods-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope", "containerd", id1, uid},
		// CRI-O; its conmon scope is the monitor, not the container.
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-" + id2 + ".scope", "crio", id2, uid},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/crio-conmon-" + id2 + ".scope", "", "", uid},
		// Podman, rootful and rootless, and its cgroupfs parent.
		{"/machine.slice/libpod-" + id2 + ".scope", "podman", id2, ""},
		{"/machine.slice/libpod-conmon-" + id2 + ".scope", "", "", ""},
		{"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id2 + ".scope/container", "podman", id2, ""},
		{"/libpod_parent/libpod-" + id2, "podman", id2, ""},
		// The kubelet's cgroupfs driver.
		{"/kubepods/burstable/pod" + uid + "/" + id1, "cri", id1, uid},
		{"/kubepods/pod" + uid + "/" + id2, "cri", id2, uid},
		{"/kubepods/besteffort/pod" + uid, "", "", uid},
		// Look-alikes that are not containers.
		{"/system.slice/docker.service", "", "", ""},
		{"/docker/buildkit", "", "", ""},
		{"/system.slice/docker-" + id1[:12] + ".scope", "", "", ""},
		{"/" + id1, "", "", ""},
		{"/kubepods-burstable-pod" + uidU + ".slice", "", "", ""}, // not under kubepods
	} {
		got := Parse(tc.path)
		if got.Path != tc.path || got.Runtime != tc.runtime || got.ID != tc.id || got.PodUID != tc.podUID {
			t.Errorf("Parse(%q) = %+v, want runtime %q id %q pod %q", tc.path, got, tc.runtime, tc.id, tc.podUID)
		}
	}
}

func TestShort(t *testing.T) {
	if s := (Info{Runtime: "docker", ID: id1}).Short(); s != "docker:0123456789ab" {
		t.Errorf("Short = %q", s)
	}
	if s := (Info{Path: "/system.slice"}).Short(); s != "" {
		t.Errorf("Short outside a container = %q", s)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// The resolver only needs directories and their inodes: any directory
// tree stands in for the cgroup hierarchy.
func TestResolverWalksOnMissAtMostOncePerInterval(t *testing.T) {
	root := t.TempDir()
	scope := filepath.Join(root, "system.slice", "docker-"+id1+".scope")
	if err := os.MkdirAll(scope, 0o755); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	r := NewResolver(root)
	r.now = func() time.Time { return now }

	if got := r.Lookup(inode(t, scope)); got.ID != id1 || got.Path != "/system.slice/docker-"+id1+".scope" {
		t.Fatalf("Lookup = %+v", got)
	}
	if got := r.Lookup(inode(t, root)); got.Path != "/" {
		t.Errorf("root: %+v", got)
	}
	if r.Walks() != 1 {
		t.Fatalf("%d walks, want 1", r.Walks())
	}

	// A cgroup made after the walk: a miss inside the interval does not walk.
	late := filepath.Join(root, "docker", id2)
	if err := os.MkdirAll(late, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := r.Lookup(inode(t, late)); got != (Info{}) || r.Walks() != 1 {
		t.Fatalf("inside the interval: %+v after %d walks", got, r.Walks())
	}
	now = now.Add(r.MinRewalk)
	if got := r.Lookup(inode(t, late)); got.ID != id2 || got.Runtime != "docker" || r.Walks() != 2 {
		t.Fatalf("after the interval: %+v after %d walks", got, r.Walks())
	}

	// A removed cgroup keeps its name: its connections are still told.
	gone := inode(t, scope)
	if err := os.Remove(scope); err != nil {
		t.Fatal(err)
	}
	now = now.Add(r.MinRewalk)
	r.Lookup(12345678901) // a miss: walks again
	if got := r.Lookup(gone); got.ID != id1 || r.Walks() != 3 {
		t.Errorf("removed cgroup: %+v after %d walks", got, r.Walks())
	}
	if got := r.Lookup(0); got != (Info{}) {
		t.Errorf("id 0: %+v", got)
	}
}

func TestResolverIsBounded(t *testing.T) {
	root := t.TempDir()
	for i := range 20 {
		if err := os.Mkdir(filepath.Join(root, "c"+string(rune('a'+i))), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := NewResolver(root)
	r.MaxEntries = 8
	r.Lookup(1)
	if n := len(r.byID); n != 8 {
		t.Errorf("%d entries cached, bound 8", n)
	}
}

func TestFindMount(t *testing.T) {
	mnt, err := FindMount()
	if err != nil {
		t.Skipf("no cgroup v2 here: %v", err)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	const cgroup2Magic = 0x63677270
	if st.Type != cgroup2Magic {
		t.Errorf("%s is not cgroup2 (fs type %#x)", mnt, st.Type)
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/sys/fs/cgroup\040x`); got != "/sys/fs/cgroup x" {
		t.Errorf("unescape = %q", got)
	}
}
