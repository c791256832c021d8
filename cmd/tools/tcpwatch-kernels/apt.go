package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// The kernels come from Debian's own archive, through apt, from the mirror
// the machine already uses. They are downloaded (apt-get download) and
// unpacked (dpkg -x) into the cache, never installed on the host.

const (
	sourcesFile = "/etc/apt/sources.list.d/tcpwatch-kernels.sources"
	prefsFile   = "/etc/apt/preferences.d/tcpwatch-kernels"
	// The suites that carry the kernels of the matrix. bookworm itself (6.1)
	// is the machine's own suite; bullseye has 5.10 (KERNELS=5.10).
	extraSuites = "bookworm-backports trixie trixie-updates trixie-backports bullseye"
)

// Kernel is one kernel of the matrix as apt resolved it.
type Kernel struct {
	Selector string   // what KERNELS asked for: 6.1, 6.12, newest, 7.x
	Arch     string   // Debian's architecture: amd64 or arm64
	Version  string   // linux-image-ARCH's Debian version, e.g. 6.1.192-2
	Suite    string   // where it came from, e.g. bookworm-security
	Packages []string // name=version of every package unpacked
	Release  string   // uname -r, e.g. 6.1.0-56-amd64
	Dir      string   // the unpacked tree
	Vmlinuz  string
}

// mirror finds the Debian mirror the machine's own sources use.
func mirror() (string, error) {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	re := regexp.MustCompile(`(https?://[^\s]+/debian)/?(\s|$)`)
	for _, f := range files {
		if f == sourcesFile {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "#") {
				continue
			}
			if m := re.FindStringSubmatch(line); m != nil {
				return m[1], nil
			}
		}
	}
	return "", fmt.Errorf("no Debian mirror (a URI ending in /debian) in /etc/apt/sources.list*")
}

// aptArch is the -o option that makes apt read (and apt-get update fetch)
// the lists of a foreign architecture for one command, without adding it to
// dpkg's (dpkg --add-architecture would make it the host's for good): the
// arm64 kernels and busybox are only downloaded and unpacked.
func aptArch(arch string) []string {
	if arch == hostDebArch() {
		return nil
	}
	return []string{"-o", "APT::Architectures::=" + arch}
}

// hostDebArch is dpkg's architecture of this machine.
func hostDebArch() string {
	out, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		return "amd64"
	}
	return strings.TrimSpace(string(out))
}

// ensureSources adds the suites the matrix needs, pinned so that they never
// upgrade the host, and refreshes apt's lists when it changed them (or when
// refresh is set, or when arch's lists are missing: a plain apt-get update
// of the host drops a foreign architecture's lists).
func ensureSources(refresh bool, arch string) error {
	m, err := mirror()
	if err != nil {
		return err
	}
	sources := fmt.Sprintf(`# Written by tcpwatch-kernels (make test-kernels): the suites that carry the
# kernels of the matrix. Kernel packages are only downloaded, never installed.
Types: deb
URIs: %s
Suites: %s
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`, m, extraSuites)
	prefs := "# Written by tcpwatch-kernels: trixie's and bullseye's lists are there only to\n# download kernel packages; they must never upgrade or downgrade this machine.\n"
	for _, s := range []string{"trixie", "trixie-updates", "trixie-backports", "bullseye"} {
		prefs += fmt.Sprintf("\nPackage: *\nPin: release n=%s\nPin-Priority: 1\n", s)
	}
	changed := false
	for _, f := range []struct{ path, text string }{{prefsFile, prefs}, {sourcesFile, sources}} {
		if old, err := os.ReadFile(f.path); err == nil && string(old) == f.text {
			continue
		}
		if err := os.WriteFile(f.path, []byte(f.text), 0o644); err != nil {
			return err
		}
		changed = true
	}
	if rows, _ := madison(arch); len(rows) == 0 {
		refresh = true
	}
	if changed || refresh {
		logf("apt-get update (suites: %s; architecture %s)", extraSuites, arch)
		if out, err := exec.Command("apt-get", append(aptArch(arch), "update", "-qq")...).CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get update: %v\n%s", err, out)
		}
	}
	return nil
}

type madisonRow struct{ version, suite string }

// madison lists linux-image-ARCH's versions and suites.
func madison(arch string) ([]madisonRow, error) {
	out, err := exec.Command("apt-cache", append(aptArch(arch), "madison", "linux-image-"+arch+":"+arch)...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache madison linux-image-%s: %v", arch, err)
	}
	var rows []madisonRow
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "|")
		if len(f) < 3 || !strings.Contains(f[2], "Packages") {
			continue
		}
		src := strings.Fields(f[2]) // URI suite/component arch Packages
		suite := ""
		if len(src) > 1 {
			suite, _, _ = strings.Cut(src[1], "/")
		}
		rows = append(rows, madisonRow{strings.TrimSpace(f[1]), suite})
	}
	sort.SliceStable(rows, func(i, j int) bool { return debVersionLess(rows[j].version, rows[i].version) })
	return rows, nil
}

// resolve picks linux-image-ARCH's version for a selector: "newest", or a
// version prefix ("6.1", "6.12", "7" or "7.x"), taking the highest match.
// Within a selector, bookworm-backports is preferred for 6.12 so the matrix
// shows what a Debian 12 machine can install.
func resolve(sel string, rows []madisonRow) (madisonRow, error) {
	if sel == "newest" {
		if len(rows) == 0 {
			return madisonRow{}, fmt.Errorf("apt knows no linux-image for this architecture")
		}
		return rows[0], nil
	}
	prefix := strings.TrimSuffix(strings.TrimSuffix(sel, "x"), ".") + "."
	var matches []madisonRow
	for _, r := range rows {
		if strings.HasPrefix(r.version, prefix) {
			matches = append(matches, r)
		}
	}
	if len(matches) == 0 {
		var vs []string
		for _, r := range rows {
			vs = append(vs, r.version+" ("+r.suite+")")
		}
		return madisonRow{}, fmt.Errorf("no linux-image matches %q; apt has %s", sel, strings.Join(vs, ", "))
	}
	for _, m := range matches {
		if strings.HasPrefix(m.suite, "bookworm") {
			return m, nil
		}
	}
	return matches[0], nil
}

// depsOf returns the kernel packages a package pins to its own version
// (linux-image-*, linux-binary-*, linux-modules-* with "(= version)").
func depsOf(name, arch, version string) ([]string, error) {
	out, err := exec.Command("apt-cache", append(aptArch(arch), "show", name+":"+arch+"="+version)...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache show %s=%s: %v", name, version, err)
	}
	var deps []string
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			break // the first stanza is enough
		}
		if !strings.HasPrefix(line, "Depends:") && !strings.HasPrefix(line, "Pre-Depends:") {
			continue
		}
		_, list, _ := strings.Cut(line, ":")
		for _, d := range strings.Split(list, ",") {
			d = strings.TrimSpace(d)
			n, rest, _ := strings.Cut(d, " ")
			if !strings.Contains(rest, "(= "+version+")") {
				continue
			}
			// linux-base-<abi> carries modules.builtin on 7.x.
			for _, p := range []string{"linux-image-", "linux-binary-", "linux-modules-", "linux-base-"} {
				if strings.HasPrefix(n, p) {
					deps = append(deps, n)
				}
			}
		}
	}
	return deps, nil
}

// fetch resolves sel, downloads its packages into cache/debs and unpacks
// them into cache/<version>, once.
func fetch(sel, arch string, rows []madisonRow, cache string) (*Kernel, error) {
	r, err := resolve(sel, rows)
	if err != nil {
		return nil, err
	}
	k := &Kernel{Selector: sel, Arch: arch, Version: r.version, Suite: r.suite}
	seen := map[string]bool{}
	queue := []string{"linux-image-" + arch}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		deps, err := depsOf(n, arch, r.version)
		if err != nil {
			return nil, err
		}
		for _, d := range deps {
			if !seen[d] {
				seen[d] = true
				queue = append(queue, d)
				k.Packages = append(k.Packages, d+"="+r.version)
			}
		}
	}
	if len(k.Packages) == 0 {
		return nil, fmt.Errorf("linux-image-%s=%s names no kernel package", arch, r.version)
	}
	debs := filepath.Join(cache, "debs")
	k.Dir = filepath.Join(cache, r.version)
	if arch != "amd64" {
		k.Dir = filepath.Join(cache, arch+"-"+r.version)
	}
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	done := filepath.Join(k.Dir, ".unpacked")
	if b, err := os.ReadFile(done); err != nil || string(b) != strings.Join(k.Packages, "\n")+"\n" {
		os.RemoveAll(k.Dir)
		for _, p := range k.Packages {
			name, ver, _ := strings.Cut(p, "=")
			if err := downloadAndUnpack(name, arch, ver, debs, k.Dir); err != nil {
				return nil, err
			}
		}
		if err := os.WriteFile(done, []byte(strings.Join(k.Packages, "\n")+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	// boot/vmlinuz-RELEASE up to 6.x; modules/RELEASE/vmlinuz in 7.x's
	// linux-binary package.
	if v, _ := filepath.Glob(filepath.Join(k.Dir, "boot", "vmlinuz-*")); len(v) == 1 {
		k.Release, k.Vmlinuz = strings.TrimPrefix(filepath.Base(v[0]), "vmlinuz-"), v[0]
	} else if v, _ := filepath.Glob(filepath.Join(k.Dir, "*lib/modules/*/vmlinuz")); len(v) == 1 {
		k.Release, k.Vmlinuz = filepath.Base(filepath.Dir(v[0])), v[0]
	} else if v, _ := filepath.Glob(filepath.Join(k.Dir, "usr/lib/modules/*/vmlinuz")); len(v) == 1 {
		k.Release, k.Vmlinuz = filepath.Base(filepath.Dir(v[0])), v[0]
	} else {
		return nil, fmt.Errorf("%s: no boot/vmlinuz-* nor lib/modules/*/vmlinuz", k.Dir)
	}
	return k, nil
}

func (k *Kernel) vmlinuz() string { return k.Vmlinuz }

// downloadAndUnpack fetches one package of arch into debs (once) and
// unpacks it into dir (dpkg -x: never installed).
func downloadAndUnpack(name, arch, ver, debs, dir string) error {
	file := filepath.Join(debs, fmt.Sprintf("%s_%s_%s.deb", name, strings.ReplaceAll(ver, ":", "%3a"), arch))
	if _, err := os.Stat(file); err != nil {
		p := name + ":" + arch + "=" + ver
		logf("apt-get download %s", p)
		cmd := exec.Command("apt-get", append(aptArch(arch), "download", "-qq", "-o", "APT::Sandbox::User=root", p)...)
		cmd.Dir = debs
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get download %s: %v\n%s", p, err, out)
		}
	}
	logf("dpkg -x %s", filepath.Base(file))
	if out, err := exec.Command("dpkg", "-x", file, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg -x %s: %v\n%s", file, err, out)
	}
	return nil
}

// foreignBusybox unpacks Debian's busybox-static of arch (the version the
// host's own lists name) into cache and returns its binary: the guest's
// userland must be the guest's architecture.
func foreignBusybox(arch, cache string) (string, error) {
	out, err := exec.Command("apt-cache", append(aptArch(arch), "madison", "busybox-static:"+arch)...).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache madison busybox-static:%s: %v", arch, err)
	}
	var ver string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Split(line, "|"); len(f) >= 3 && strings.Contains(f[2], "Packages") {
			if v := strings.TrimSpace(f[1]); ver == "" || debVersionLess(ver, v) {
				ver = v
			}
		}
	}
	if ver == "" {
		return "", fmt.Errorf("apt knows no busybox-static for %s", arch)
	}
	dir := filepath.Join(cache, "busybox-"+arch+"-"+ver)
	// bin/ up to bookworm, usr/bin/ in the merged-/usr packages after it.
	find := func() string {
		for _, p := range []string{"bin/busybox", "usr/bin/busybox"} {
			if st, err := os.Stat(filepath.Join(dir, p)); err == nil && st.Mode().IsRegular() {
				return filepath.Join(dir, p)
			}
		}
		return ""
	}
	if bin := find(); bin != "" {
		return bin, nil
	}
	debs := filepath.Join(cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", err
	}
	if err := downloadAndUnpack("busybox-static", arch, ver, debs, dir); err != nil {
		return "", err
	}
	if bin := find(); bin != "" {
		return bin, nil
	}
	return "", fmt.Errorf("busybox-static:%s=%s has no bin/busybox nor usr/bin/busybox", arch, ver)
}

// modulesDir is lib/modules/<release> (usr/lib/modules on merged-/usr packages).
func (k *Kernel) modulesDir() (string, error) {
	for _, d := range []string{"lib/modules", "usr/lib/modules"} {
		p := filepath.Join(k.Dir, d, k.Release)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: no modules for %s", k.Dir, k.Release)
}

// debVersionLess compares Debian versions with dpkg itself.
func debVersionLess(a, b string) bool {
	return exec.Command("dpkg", "--compare-versions", a, "lt", b).Run() == nil
}
