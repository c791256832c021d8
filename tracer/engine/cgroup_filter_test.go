package engine

import (
	"testing"

	"github.com/tcpwatch/tcpwatch/tracer/containers"
)

func TestMatchCgroup(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	in := containers.Parse("/system.slice/docker-" + id + ".scope")
	host := containers.Parse("/system.slice/sshd.service")
	for _, tc := range []struct {
		f    Filter
		info containers.Info
		want bool
	}{
		{Filter{}, containers.Info{}, true},
		{Filter{Container: "0123456789ab"}, in, true},
		{Filter{Container: id}, in, true},
		{Filter{Container: "0123456789ac"}, in, false},
		{Filter{Container: "0123"}, host, false},
		{Filter{Container: "0123"}, containers.Info{}, false},
		{Filter{Cgroup: "/system.slice"}, in, true},
		{Filter{Cgroup: "/system.slice/docker-"}, in, true},
		{Filter{Cgroup: "/system.slice/docker-"}, host, false},
		{Filter{Cgroup: "/"}, containers.Info{}, false}, // unknown cgroup: not known to be under it
		{Filter{Cgroup: "/system.slice", Container: "0123"}, in, true},
		{Filter{Cgroup: "/user.slice", Container: "0123"}, in, false},
	} {
		if got := tc.f.MatchCgroup(tc.info); got != tc.want {
			t.Errorf("%+v on %q: %v, want %v", tc.f, tc.info.Path, got, tc.want)
		}
	}
}
