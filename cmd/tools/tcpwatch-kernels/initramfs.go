package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// labModules are what the lab and the tests need from modules (Debian
// builds them as modules; a name the kernel has built in is skipped):
// veth and bridge for the cables, nf_tables with numgen and the bridge meta
// keys for blackhole and loss rules, inet_diag/tcp_diag for sock_diag.
var labModules = []string{
	"veth", "bridge", "nf_tables", "nft_numgen", "nft_meta_bridge",
	"inet_diag", "tcp_diag",
}

type module struct {
	name, path string // path relative to the modules dir
	deps       []string
	data       []byte // decompressed, filled when loaded
}

func modName(file string) string {
	b := filepath.Base(file)
	for _, s := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, s)
	}
	return strings.ReplaceAll(strings.TrimSuffix(b, ".ko"), "-", "_")
}

// decompress reads a module file, undoing .xz/.zst/.gz with the host's tools.
func decompress(path string) ([]byte, error) {
	var tool []string
	switch {
	case strings.HasSuffix(path, ".xz"):
		tool = []string{"xz", "-dc"}
	case strings.HasSuffix(path, ".zst"):
		tool = []string{"zstd", "-dcq"}
	case strings.HasSuffix(path, ".gz"):
		tool = []string{"gzip", "-dc"}
	default:
		return os.ReadFile(path)
	}
	out, err := exec.Command(tool[0], append(tool[1:], path)...).Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v", strings.Join(tool, " "), path, err)
	}
	return out, nil
}

// modinfoDepends reads "depends=" from a module's .modinfo section.
func modinfoDepends(data []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, nil
	}
	b, err := s.Data()
	if err != nil {
		return nil, err
	}
	var deps []string
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			deps = append(deps, strings.Split(string(v), ",")...)
		}
		// softdep=pre: crc32c — what modprobe would load first (libcrc32c
		// needs the crc32c crypto algorithm, or its init fails).
		if v, ok := bytes.CutPrefix(kv, []byte("softdep=")); ok {
			f := strings.Fields(string(v))
			pre := false
			for _, w := range f {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						deps = append(deps, "?"+w)
					}
				}
			}
		}
	}
	return deps, nil
}

// resolveModules returns the modules to load, dependencies first, with the
// names the kernel has built in dropped.
func resolveModules(dir string, want []string) ([]*module, []string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			rel, _ := filepath.Rel(dir, p)
			files[modName(p)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(l)] = true
		}
	}
	var order []*module
	var builtins []string
	done := map[string]bool{}
	var visit func(name string, stack []string) error
	visit = func(name string, stack []string) error {
		name = strings.ReplaceAll(name, "-", "_")
		if soft, ok := strings.CutPrefix(name, "?"); ok {
			// A soft dependency names a module or an alias: try the name
			// and its _generic crypto driver; leave it out if neither exists.
			for _, n := range []string{soft, soft + "_generic"} {
				if _, ok := files[n]; ok || builtin[n] {
					return visit(n, stack)
				}
			}
			return nil
		}
		if done[name] {
			return nil
		}
		done[name] = true
		rel, ok := files[name]
		if !ok {
			if builtin[name] {
				builtins = append(builtins, name)
				return nil
			}
			return fmt.Errorf("module %s (needed by %v) is neither a module nor built in", name, stack)
		}
		data, err := decompress(filepath.Join(dir, rel))
		if err != nil {
			return err
		}
		deps, err := modinfoDepends(data)
		if err != nil {
			return fmt.Errorf("%s: %v", rel, err)
		}
		for _, d := range deps {
			if err := visit(d, append(stack, name)); err != nil {
				return err
			}
		}
		order = append(order, &module{name: name, path: strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(rel, ".xz"), ".zst"), ".gz"), deps: deps, data: data})
		return nil
	}
	for _, w := range want {
		if err := visit(w, nil); err != nil {
			return nil, nil, err
		}
	}
	return order, builtins, nil
}

// cpioWriter writes a gzip-compressed newc archive, the initramfs format.
type cpioWriter struct {
	gz  *gzip.Writer
	ino uint32
	err error
}

func newCpio(w io.Writer) *cpioWriter {
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	return &cpioWriter{gz: gz, ino: 300000}
}

func (c *cpioWriter) entry(name string, mode uint32, rdevMajor, rdevMinor uint32, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	buf := []byte(hdr + name + "\x00")
	for len(buf)%4 != 0 {
		buf = append(buf, 0)
	}
	buf = append(buf, data...)
	for len(buf)%4 != 0 {
		buf = append(buf, 0)
	}
	_, c.err = c.gz.Write(buf)
}

func (c *cpioWriter) dir(name string) { c.entry(name, 0o040755, 0, 0, nil) }
func (c *cpioWriter) file(name string, perm uint32, data []byte) {
	c.entry(name, 0o100000|perm, 0, 0, data)
}
func (c *cpioWriter) symlink(name, target string) { c.entry(name, 0o120777, 0, 0, []byte(target)) }
func (c *cpioWriter) chardev(name string, major, minor uint32) {
	c.entry(name, 0o020600, major, minor, nil)
}

func (c *cpioWriter) close() error {
	c.entry("TRAILER!!!", 0, 0, 0, nil)
	if c.err != nil {
		return c.err
	}
	return c.gz.Close()
}

// dirs adds every parent of p not yet added.
func (c *cpioWriter) dirs(p string, seen map[string]bool) {
	parts := strings.Split(filepath.Dir(p), "/")
	for i := range parts {
		d := strings.Join(parts[:i+1], "/")
		if d != "" && d != "." && !seen[d] {
			seen[d] = true
			c.dir(d)
		}
	}
}

// guestFile is one file of the initramfs: data, or a host file to copy.
type guestFile struct {
	path string // inside the guest, without the leading /
	perm uint32
	data []byte
	host string
}

// buildInitramfs writes the guest's initramfs to out.
func buildInitramfs(out string, files []guestFile, mods []*module, busybox string, foreign bool) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	c := newCpio(f)
	seen := map[string]bool{}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root", "etc", "lib", "lib/modules", "tests"} {
		seen[d] = true
		c.dir(d)
	}
	c.chardev("dev/console", 5, 1)
	c.chardev("dev/null", 1, 3)
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	c.file("bin/busybox", 0o755, bb)
	c.symlink("init", "bin/busybox")
	// A busybox of another architecture cannot say its applets here: the
	// guest's plan links them itself (busybox --install -s) from its shell.
	applets := []byte("sh")
	if !foreign {
		if applets, err = exec.Command(busybox, "--list").Output(); err != nil {
			return fmt.Errorf("%s --list: %v", busybox, err)
		}
	}
	for _, a := range strings.Fields(string(applets)) {
		if a == "busybox" {
			continue
		}
		c.symlink("bin/"+a, "busybox")
	}
	for _, g := range files {
		data := g.data
		if g.host != "" {
			if data, err = os.ReadFile(g.host); err != nil {
				return err
			}
		}
		c.dirs(g.path, seen)
		c.file(g.path, g.perm, data)
	}
	for _, m := range mods {
		p := "lib/modules/" + m.path
		c.dirs(p, seen)
		c.file(p, 0o644, m.data)
	}
	return c.close()
}
