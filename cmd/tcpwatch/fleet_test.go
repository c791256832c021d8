package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/cgroups"
)

func TestFleetFlagsBad(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--container", "XYZ"}, "not a container id"},
		{[]string{"--container", ""}, "not a container id"},
		{[]string{"--cgroup", "system.slice"}, "starts with /"},
		{[]string{"--host-name", " "}, "must not be empty"},
		{[]string{"--metrics", ":0", "--metrics-labels", "raddr"}, "only optional label is container"},
		{[]string{"--metrics-labels", "container"}, "needs --metrics"},
	} {
		var stderr bytes.Buffer
		cmd := tcpwatch(t, tc.args...)
		cmd.Stderr = &stderr
		cmd.Run()
		first, _, _ := strings.Cut(stderr.String(), "\n")
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.HasPrefix(first, "tcpwatch: ") || !strings.Contains(first, tc.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 and %q", tc.args, code, first, tc.want)
		}
	}
}

const (
	fleetUID  = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
	fleetUIDU = "1f2e3d4c_5b6a_4978_8695_a4b3c2d1e0f9"
)

func fleetID(n int) string { return strings.Repeat(fmt.Sprintf("%x", n%16), 64) }

// cgroupCase is one cgroup named as a runtime names it, and what tcpwatch
// must read from it.
type cgroupCase struct {
	name, rel, runtime, id, pod string
}

var cgroupCases = []cgroupCase{
	{"docker", "system.slice/docker-" + fleetID(1) + ".scope", "docker", fleetID(1), ""},
	{"containerd", "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + fleetUIDU + ".slice/cri-containerd-" + fleetID(2) + ".scope", "containerd", fleetID(2), fleetUID},
	{"crio", "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + fleetUIDU + ".slice/crio-" + fleetID(3) + ".scope", "crio", fleetID(3), fleetUID},
	{"podman", "machine.slice/libpod-" + fleetID(4) + ".scope", "podman", fleetID(4), ""},
	{"docker-cgroupfs", "docker/" + fleetID(5), "docker", fleetID(5), ""},
	{"kubepods-cgroupfs", "kubepods/burstable/pod" + fleetUID + "/" + fleetID(6), "cri", fleetID(6), fleetUID},
	{"no-container", "system.slice/cron.service", "", "", ""},
}

// Processes in cgroup directories named as each runtime names them make a
// failing connection; the real tcpwatch names the cgroup, the container
// and the pod of each, and its --container, --cgroup and --host-name do
// what they say.
func TestContainerAttribution(t *testing.T) {
	testkit.RequirePrivileged(t)
	mount, parent := cgroups.Parent(t)
	type made struct {
		cgroupCase
		cg   cgroups.Cgroup
		port int
	}
	var cases []made
	for _, c := range cgroupCases {
		cases = append(cases, made{cgroupCase: c, cg: cgroups.Make(t, mount, parent, c.rel)})
	}
	all := startWatch(t, "--host-name", "node-under-test")
	byContainer := startWatch(t, "--container", fleetID(2)[:12])
	byCgroup := startWatch(t, "--cgroup", parent.Path+"/kubepods.slice")

	for i := range cases {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cases[i].port = ln.Addr().(*net.TCPAddr).Port
		ln.Close() // now nothing listens: the connection is refused
		cmd := exec.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", cases[i].port))
		cgroups.Start(t, cases[i].cg, cmd)
		if err := cmd.Wait(); err == nil {
			t.Fatalf("%s: connect to a closed port succeeded", cases[i].name)
		}
	}

	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	netns := uint32(st.Ino)
	byPort := func(w *serverWatch) map[int]narrativeJSON {
		m := map[int]narrativeJSON{}
		for _, n := range w.stop(t, netns) {
			if n.Verdict == "connect_refused" {
				m[int(n.RPort)] = n
			}
		}
		return m
	}
	got := byPort(all)
	for _, c := range cases {
		n, ok := got[c.port]
		if !ok {
			t.Errorf("%s: no connect_refused narrative for port %d", c.name, c.port)
			continue
		}
		t.Logf("%s: cgroup=%s container_id=%.12s pod_uid=%s host=%s", c.name, n.Cgroup, n.ContainerID, n.PodUID, n.Host)
		if n.Cgroup != c.cg.Path || n.ContainerID != c.id || n.PodUID != c.pod || n.Host != "node-under-test" {
			t.Errorf("%s: cgroup %q container_id %q pod_uid %q host %q; want %q %q %q node-under-test",
				c.name, n.Cgroup, n.ContainerID, n.PodUID, n.Host, c.cg.Path, c.id, c.pod)
		}
	}
	// The other records carry the host too.
	for _, line := range strings.Split(strings.TrimSpace(all.stdout.String()), "\n") {
		var rec struct{ Type, Host string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Host != "node-under-test" {
			t.Errorf("%s record without the host: %s", rec.Type, line)
		}
	}

	check := func(what string, w *serverWatch, keep func(c cgroupCase) bool) {
		got := byPort(w)
		for _, c := range cases {
			if _, ok := got[c.port]; ok != keep(c.cgroupCase) {
				t.Errorf("%s: %s told %v, want %v", what, c.name, ok, keep(c.cgroupCase))
			}
		}
	}
	check("--container", byContainer, func(c cgroupCase) bool { return c.name == "containerd" })
	check("--cgroup", byCgroup, func(c cgroupCase) bool { return c.name == "containerd" || c.name == "crio" })
}
