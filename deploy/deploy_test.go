// Package deploy_test checks the shipped deployment files against the
// real consumers: the Kubernetes API types, systemd-analyze, and the
// tcpwatch binary run with exactly the capabilities they grant.
package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
)

// wantCaps is the capability set both files must grant, and nothing more.
var wantCaps = []string{"BPF", "DAC_READ_SEARCH", "PERFMON", "SYSLOG", "SYS_ADMIN", "SYS_PTRACE"}

func daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	raw, err := os.ReadFile("kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	// Strict: an unknown or misspelt field is an error, as kubectl --validate=strict.
	if err := yaml.UnmarshalStrict(raw, &ds); err != nil {
		t.Fatalf("daemonset.yaml does not decode strictly into apps/v1 DaemonSet: %v", err)
	}
	return &ds
}

func TestDaemonSet(t *testing.T) {
	ds := daemonSet(t)
	if ds.Kind != "DaemonSet" || ds.APIVersion != "apps/v1" {
		t.Errorf("kind %q apiVersion %q", ds.Kind, ds.APIVersion)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostPID || spec.HostNetwork {
		t.Errorf("hostPID %v hostNetwork %v; want true, false", spec.HostPID, spec.HostNetwork)
	}
	if len(spec.Tolerations) == 0 {
		t.Error("no tolerations: nodes with taints would go unwatched")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no securityContext.capabilities")
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("privileged must be set, to false")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem must be true")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	var add []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	slices.Sort(add)
	if !slices.Equal(add, wantCaps) {
		t.Errorf("capabilities %v, want exactly %v", add, wantCaps)
	}
	argv := strings.Join(append(slices.Clone(c.Command), c.Args...), " ")
	if !strings.Contains(argv, "-o json") || !strings.Contains(argv, "--metrics :9599") {
		t.Errorf("command %q: want -o json --metrics :9599", argv)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 9599 || c.Ports[0].Name != "metrics" {
		t.Errorf("ports %+v", c.Ports)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Limits.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("resources %+v: want requests and limits", c.Resources)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("mount %s is writable", m.MountPath)
		}
		mounts[m.Name] = m.MountPath
	}
	for _, v := range spec.Volumes {
		if v.HostPath == nil {
			t.Errorf("volume %s is not a hostPath", v.Name)
			continue
		}
		if mounts[v.Name] != v.HostPath.Path {
			t.Errorf("volume %s: host %s mounted at %s", v.Name, v.HostPath.Path, mounts[v.Name])
		}
	}
	for _, want := range []string{"/sys/kernel/btf", "/sys/fs/cgroup"} {
		if !slices.Contains(slices.Collect(func(yield func(string) bool) {
			for _, p := range mounts {
				if !yield(p) {
					return
				}
			}
		}), want) {
			t.Errorf("%s is not mounted", want)
		}
	}
}

// unitLines reads a systemd unit's Key=Value lines.
func unitLines(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			kv[k] = append(kv[k], v)
		}
	}
	return kv
}

func TestSystemdUnit(t *testing.T) {
	kv := unitLines(t, "systemd/tcpwatch.service")
	for _, key := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		if len(kv[key]) != 1 {
			t.Fatalf("%s: %v", key, kv[key])
		}
		caps := strings.Fields(kv[key][0])
		for i := range caps {
			caps[i] = strings.TrimPrefix(caps[i], "CAP_")
		}
		slices.Sort(caps)
		if !slices.Equal(caps, wantCaps) {
			t.Errorf("%s %v, want the DaemonSet's %v", key, caps, wantCaps)
		}
	}
	for key, want := range map[string]string{"Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
		"ProtectHome": "yes", "StandardOutput": "journal"} {
		if got := kv[key]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%v, want %s", key, got, want)
		}
	}
	if exec := kv["ExecStart"]; len(exec) != 1 || !strings.Contains(exec[0], "-o json") {
		t.Errorf("ExecStart %v: want JSON output", exec)
	}
}

// systemd-analyze verify checks the unit as systemd would load it; the
// binary it names is the one built here.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if testkit.InCI() {
			t.Fatal("systemd-analyze is not installed (make deps installs Debian's systemd)")
		}
		t.Skip("systemd-analyze is not installed")
	}
	bin := buildStatic(t)
	raw, err := os.ReadFile("systemd/tcpwatch.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "tcpwatch.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(raw, []byte("/usr/local/bin/tcpwatch"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

var staticBin string

// buildStatic builds tcpwatch as the release does (CGO_ENABLED=0) into a
// directory anyone may enter.
func buildStatic(t *testing.T) string {
	t.Helper()
	if staticBin != "" {
		return staticBin
	}
	dir, err := os.MkdirTemp("", "tcpwatch-deploy-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "tcpwatch")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/tcpwatch")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	staticBin = bin
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if staticBin != "" {
		os.RemoveAll(filepath.Dir(staticBin))
	}
	os.Exit(code)
}

// The binary runs as nobody with exactly the DaemonSet's capabilities
// (inheritable, ambient and bounding set; nothing else): every hook
// attaches, existing connections are listed in every namespace, and a
// refused connection is narrated with its cgroup.
func TestRunsWithExactlyTheListedCapabilities(t *testing.T) {
	testkit.RequirePrivileged(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is not installed")
	}
	bin := buildStatic(t)
	var caps []string
	for _, c := range daemonSet(t).Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add {
		caps = append(caps, "+"+strings.ToLower(string(c)))
	}
	set := "-all," + strings.Join(caps, ",")
	run := func(args ...string) *exec.Cmd {
		return exec.Command(setpriv, append([]string{"--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
			"--inh-caps", set, "--ambient-caps", set, "--bounding-set", set, "--", bin}, args...)...)
	}
	out, err := run("check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "every verdict is available") {
		t.Fatalf("check with %s: %v\n%s", set, err, out)
	}

	cmd := run("-o", "json", "--duration", "4s")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		c.Close()
		t.Fatal("connect to a closed port succeeded")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("as nobody with %s: %v\n%s", set, err, stderr.String())
	}
	if strings.Contains(stderr.String(), "not permitted") {
		t.Errorf("with the listed capabilities something was not permitted:\n%s", stderr.String())
	}
	found := false
	for _, line := range strings.Split(stdout.String(), "\n") {
		var n struct {
			Type, Verdict, Cgroup string
			RPort                 int
			PID                   int
		}
		if json.Unmarshal([]byte(line), &n) == nil && n.Verdict == "connect_refused" && n.RPort == port {
			found = true
			if n.Cgroup == "" || n.PID != os.Getpid() {
				t.Errorf("narrative as nobody: cgroup %q pid %d (want %d): %s", n.Cgroup, n.PID, os.Getpid(), line)
			}
		}
	}
	if !found {
		t.Errorf("no connect_refused narrative for port %d as nobody:\n%s\n%s", port, stdout.String(), stderr.String())
	}
}

// go install .../cmd/tcpwatch@latest needs no clang: the BPF object and
// its bindings are committed, and the bindings build on both release
// architectures.
func TestBPFObjectIsCommittedForBothArchitectures(t *testing.T) {
	out, err := exec.Command("git", "ls-files", "--error-unmatch", "../bpf/tcpwatch_bpfel.o", "../bpf/tcpwatch_bpfel.go").CombinedOutput()
	if err != nil {
		t.Skipf("not a git checkout (%v): %s", err, out)
	}
	src, err := os.ReadFile("../bpf/tcpwatch_bpfel.go")
	if err != nil {
		t.Fatal(err)
	}
	tag, _, _ := strings.Cut(string(src[bytes.Index(src, []byte("//go:build")):]), "\n")
	for _, arch := range []string{"amd64", "arm64"} {
		if !slices.Contains(strings.Fields(strings.NewReplacer("||", " ").Replace(tag)), arch) {
			t.Errorf("%s: %s is not covered", tag, arch)
		}
	}
}
