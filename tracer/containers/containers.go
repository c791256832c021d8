// Package containers names the cgroup a socket belongs to: the kernel
// gives a cgroup v2 id (the inode of the cgroup's directory), this
// package finds its path under the cgroup v2 mount and reads from the
// path what container runtimes and the kubelet write into it: the
// container id and the pod uid. It reads the cgroup filesystem only.
package containers

import (
	"regexp"
	"strings"
)

// Info is what a cgroup says about who made a socket.
type Info struct {
	// Path is the cgroup v2 path from the hierarchy's root
	// ("/system.slice/docker-<id>.scope"), "" when unknown.
	Path string
	// Runtime names the container runtime that made the cgroup: docker,
	// containerd, crio, podman, or cri (a kubepods cgroupfs layout, which
	// does not say which runtime); "" outside containers.
	Runtime string
	// ID is the full container id, "" outside containers.
	ID string
	// PodUID is the Kubernetes pod's uid (with dashes), "" outside pods.
	PodUID string
}

// Short is the text form: runtime and the id's first 12 characters, as
// `docker ps` shows it ("docker:0123456789ab"); "" outside containers.
func (i Info) Short() string {
	if i.ID == "" {
		return ""
	}
	id := i.ID
	if len(id) > 12 {
		id = id[:12]
	}
	return i.Runtime + ":" + id
}

// scopes are the systemd cgroup driver's unit names, by runtime. The
// conmon scopes CRI-O and Podman make beside a container hold its
// monitor, not the container: they do not match (their id is prefixed
// with "conmon-").
var scopes = []struct {
	prefix, runtime string
}{
	{"docker-", "docker"},
	{"cri-containerd-", "containerd"},
	{"crio-", "crio"},
	{"libpod-", "podman"},
}

var hexID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// podSlice is the systemd driver's pod slice:
// kubepods-pod<uid>.slice (Guaranteed) or kubepods-<qos>-pod<uid>.slice,
// the uid's dashes written as underscores.
var podSlice = regexp.MustCompile(`^kubepods(?:-[a-z]+)?-pod([0-9a-fA-F_]{36})\.slice$`)

// podDir is the cgroupfs driver's pod directory: pod<uid>.
var podDir = regexp.MustCompile(`^pod([0-9a-fA-F-]{36})$`)

// Parse reads a cgroup v2 path: which container, which pod. A container
// nested inside another (kind, a container's own systemd) is the deepest.
func Parse(path string) Info {
	info := Info{Path: path}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	underKubepods := false
	for i, p := range parts {
		if p == "kubepods" || p == "kubepods.slice" {
			underKubepods = true
			continue
		}
		if underKubepods {
			if m := podSlice.FindStringSubmatch(p); m != nil {
				info.PodUID = strings.ReplaceAll(m[1], "_", "-")
				continue
			}
			if m := podDir.FindStringSubmatch(p); m != nil {
				info.PodUID = m[1]
				continue
			}
		}
		if rt, id, ok := scopeID(p); ok {
			info.Runtime, info.ID = rt, id
			continue
		}
		// cgroupfs layouts: /docker/<id>, /kubepods[/<qos>]/pod<uid>/<id>,
		// /libpod_parent/libpod-<id> (matched above as a scope-less name).
		if hexID.MatchString(p) && i > 0 {
			switch {
			case parts[i-1] == "docker":
				info.Runtime, info.ID = "docker", p
			case underKubepods && podDir.MatchString(parts[i-1]):
				info.Runtime, info.ID = "cri", p
			}
		}
	}
	return info
}

// scopeID reads "<runtime prefix><64 hex>.scope" (or the same without
// ".scope", as Podman's cgroupfs layout names it).
func scopeID(name string) (runtime, id string, ok bool) {
	base := strings.TrimSuffix(name, ".scope")
	for _, s := range scopes {
		if rest, found := strings.CutPrefix(base, s.prefix); found && hexID.MatchString(rest) {
			return s.runtime, rest, true
		}
	}
	return "", "", false
}
