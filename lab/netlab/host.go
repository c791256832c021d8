//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host is one machine of the lab: a named network namespace. Its
// configuration (cables, routes the lab added, sysctls set through Sysctl)
// survives Reboot; its state (sockets, processes, neighbour caches, DropPort
// and RouteUnreachable rules) does not.
type Host struct {
	lab  *Lab
	name string
	path string // the namespace's bind mount

	// The fields below are guarded by lab.mu.
	nl      *netlink.Handle // rtnetlink socket inside the current namespace
	gen     int             // bumped by Reboot; undo funcs of an older generation are no-ops
	ends    []*end          // in cable order: ends[i] is eth<i>
	sysctls [][2]string     // replayed after Reboot
	routes  []route         // replayed after Reboot
}

type route struct {
	dst netip.Prefix
	gw  netip.Addr
}

// Name is the name given to AddHost.
func (h *Host) Name() string { return h.name }

// NetnsPath is the namespace's bind mount, for tools such as
// `nsenter --net=PATH` or netns.GetFromPath.
func (h *Host) NetnsPath() string { return h.path }

// Addr4 is the host's IPv4 address on its first cable (the zero Addr if it
// has none).
func (h *Host) Addr4() netip.Addr {
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	if len(h.ends) == 0 {
		return netip.Addr{}
	}
	return h.ends[0].addr4.Addr()
}

// Addr6 is the host's IPv6 address on its first cable (the zero Addr if it
// has none).
func (h *Host) Addr6() netip.Addr {
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	if len(h.ends) == 0 {
		return netip.Addr{}
	}
	return h.ends[0].addr6.Addr()
}

// Do runs fn on an OS thread that is inside the host's namespace, and waits
// for it. Sockets belong to the namespace they were created in for their whole
// life, so a listener or connection made in fn can be used afterwards from any
// goroutine. Only fn's own goroutine is in the namespace: goroutines it starts
// are not, and fn must not call t.FailNow (it runs on a goroutine of its own; a
// panic in fn is re-raised in the caller). The thread is moved back afterwards,
// or discarded if that fails.
//
// /proc/net and /proc/self/net follow the process's main thread, not fn's
// thread: read /proc/thread-self/net/... (snmp, netstat, tcp) in fn to see
// the host's counters and sockets. /proc/sys/net does follow the thread.
func (h *Host) Do(fn func() error) error {
	return doInNetns(h.path, fn)
}

// Sysctl sets a sysctl inside the host's namespace only, for example
// Sysctl("net/ipv4/tcp_retries2", "3"); dots work as separators too. Only
// per-namespace keys (net/...) make sense: writing a global one would change
// the whole machine, so anything else is refused. The value is set again after
// Reboot, like /etc/sysctl.conf.
func (h *Host) Sysctl(key, value string) error {
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	key = strings.TrimPrefix(key, "/")
	if !strings.HasPrefix(key, "net/") || strings.Contains(key, "..") {
		return fmt.Errorf("netlab: sysctl %q is not per network namespace", key)
	}
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	if h.lab.closed {
		return errClosed
	}
	if err := h.Do(func() error { return writeSysctl(key, value) }); err != nil {
		return fmt.Errorf("netlab: %s: sysctl %s=%s: %w", h.name, key, value, err)
	}
	h.sysctls = append(h.sysctls, [2]string{key, value})
	return nil
}

// ReadSysctl reads a sysctl as seen inside the host's namespace.
func (h *Host) ReadSysctl(key string) (string, error) {
	if !strings.Contains(key, "/") {
		key = strings.ReplaceAll(key, ".", "/")
	}
	var v string
	err := h.Do(func() (err error) {
		v, err = readSysctl(key)
		return err
	})
	return v, err
}

// nsexecArg0 marks a process started by Command that has yet to enter its
// namespace; see init.
const nsexecArg0 = "tcpwatch-netlab-nsexec"

// init completes Command. Go's os/exec cannot make a child join an existing
// network namespace (SysProcAttr can only create new ones), and cmd.Start may
// be called from any thread, so Command runs this very binary first (through
// /proc/self/exe) with argv [nsexecArg0, namespace, program, argv...]. In that
// child, this init (which runs before main and before any test) joins the
// namespace and execs the real program, which therefore starts life inside
// the namespace with the caller's environment, directory and files.
func init() {
	if len(os.Args) < 4 || os.Args[0] != nsexecArg0 {
		return
	}
	runtime.LockOSThread()
	nsPath, prog, argv := os.Args[1], os.Args[2], os.Args[3:]
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(fd, unix.CLONE_NEWNET)
	}
	if err == nil {
		err = unix.Exec(prog, argv, os.Environ())
	}
	fmt.Fprintf(os.Stderr, "netlab: cannot start %s in %s: %v\n", prog, nsPath, err)
	os.Exit(127)
}

// Command is like exec.Command, but the process starts inside the host's
// namespace however and wherever Start is called (see init for how). Path and
// Args are rewritten for that, so treat them as opaque; append to Args or set
// Env, Dir, Stdin, Stdout and so on as usual. SysProcAttr.Pdeathsig is
// SIGKILL so the process dies with the thread that started it if this process
// dies. Whatever runs in the namespace, started here or not, is killed by
// Reboot and Close; collecting its exit status with Wait is still the
// caller's job.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if cmd.Err != nil {
		return cmd // Start reports it
	}
	cmd.Args = append([]string{nsexecArg0, h.path, cmd.Path}, cmd.Args...)
	cmd.Path = "/proc/self/exe"
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Reboot emulates a crash and a reboot: every process in the host is killed,
// the namespace is deleted (taking its sockets, routes, neighbour caches and
// nftables rules along) and created afresh under the same name, and its
// cables are plugged back in with the same interface names, MAC and IP
// addresses. A peer therefore reaches the same addresses, without even a stale
// ARP entry to slow it down, and finds no socket: it gets an RST. Sockets the
// caller created in the old namespace stay open but are cut off from every
// cable; close them.
func (h *Host) Reboot() error {
	l := h.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errClosed
	}
	if err := h.teardown(); err != nil {
		return fmt.Errorf("netlab: rebooting %s: %w", h.name, err)
	}
	h.gen++
	if err := h.boot(); err != nil {
		return fmt.Errorf("netlab: rebooting %s: %w", h.name, err)
	}
	return nil
}

// boot creates the namespace and puts the host's configuration into it.
func (h *Host) boot() error {
	if err := createNamedNetns(h.path); err != nil {
		return fmt.Errorf("netlab: creating host %s: %w", h.name, err)
	}
	err := h.Do(func() error {
		// New namespaces start from the kernel's defaults, not the host's;
		// set what IPv6 needs explicitly anyway. accept_dad=0 makes the
		// link-local addresses usable at once too.
		for _, kv := range [][2]string{
			{"net/ipv6/conf/default/disable_ipv6", "0"},
			{"net/ipv6/conf/all/disable_ipv6", "0"},
			{"net/ipv6/conf/default/accept_dad", "0"},
			{"net/ipv6/conf/all/accept_dad", "0"},
		} {
			if err := writeSysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		h.nl = nl
		return err
	})
	if err != nil {
		return fmt.Errorf("netlab: setting up host %s: %w", h.name, err)
	}
	lo, err := h.nl.LinkByName("lo")
	if err == nil {
		err = h.nl.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("netlab: %s: bringing lo up: %w", h.name, err)
	}
	for _, e := range h.ends {
		if err := h.lab.attach(e); err != nil {
			return err
		}
	}
	for _, kv := range h.sysctls {
		if err := h.Do(func() error { return writeSysctl(kv[0], kv[1]) }); err != nil {
			return fmt.Errorf("netlab: %s: sysctl %s: %w", h.name, kv[0], err)
		}
	}
	for _, r := range h.routes {
		if err := h.applyRoute(r); err != nil {
			return err
		}
	}
	return nil
}

// teardown is the crash half of Reboot, and the host's part of Close. It is
// safe on a partly built or already torn down host.
func (h *Host) teardown() error {
	var errs []error
	id, err := netnsIDOf(h.path)
	if err != nil {
		id = netnsID{} // matches no process; still kill those entering it
	}
	if err := killNetnsProcesses(id, h.path); err != nil {
		errs = append(errs, fmt.Errorf("netlab: %s: %w", h.name, err))
	}
	// Deleting the wire end of a veth pair deletes the host's end as well,
	// even if user sockets keep the old namespace alive.
	if w := h.lab.wire; w != nil {
		for _, e := range h.ends {
			if link, err := w.LinkByName(e.port); err == nil {
				if err := w.LinkDel(link); err != nil && !isNotFound(err) {
					errs = append(errs, fmt.Errorf("netlab: deleting %s: %w", e.port, err))
				}
			}
		}
	}
	if h.nl != nil {
		h.nl.Close()
		h.nl = nil
	}
	if err := deleteNamedNetns(h.path); err != nil {
		errs = append(errs, err)
	}
	// Once more, now that the path is gone and nothing new can enter: a
	// Command child the first scan could not recognise (caught inside an
	// exec, say) may have joined the namespace since, and would keep it
	// alive and running.
	if id != (netnsID{}) {
		if err := killNetnsProcesses(id, h.path); err != nil {
			errs = append(errs, fmt.Errorf("netlab: %s: %w", h.name, err))
		}
	}
	return errors.Join(errs...)
}

func (h *Host) applyRoute(r route) error {
	err := h.nl.RouteAdd(&netlink.Route{Dst: prefixToIPNet(r.dst), Gw: net.IP(r.gw.AsSlice())})
	if err != nil {
		return fmt.Errorf("netlab: %s: route %s via %s: %w", h.name, r.dst, r.gw, err)
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// undoFunc wraps an undo step so it runs at most once and does nothing once
// the thing it would undo has vanished (lab closed, or host rebooted when
// alive reports so).
func (l *Lab) undoFunc(alive func() bool, undo func() error) func() error {
	done := false
	return func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if done || l.closed || !alive() {
			done = true
			return nil
		}
		done = true
		return undo()
	}
}
