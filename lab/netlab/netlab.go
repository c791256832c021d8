//go:build linux

// Package netlab builds throw-away networks out of Linux network namespaces so
// that tcpwatch's scenario lab can reproduce TCP failures (pulled cables, black
// holes, crashed peers, unreachable routes) on one machine.
//
// Everything happens inside namespaces the Lab creates: it never changes the
// interfaces, routes, nftables tables or sysctls of the namespace it was
// started from, and it needs no ip or nft binary (it speaks netlink itself).
//
// # Topology
//
// A Host is a named network namespace, as `ip netns add` would make it, so
// `ip netns exec` and `nsenter --net=/run/netns/NAME` can be used to poke at a
// running lab by hand.
//
// A Cable joins two hosts. It is not a single veth pair: each host gets a veth
// (eth0, eth1, ... in the order its cables were made) whose other end is a
// port of a bridge in one extra namespace per lab, the "wire". The detour is
// what makes Pull realistic: taking the wire's ports down makes both hosts
// lose carrier while their interfaces stay administratively up and keep their
// addresses and routes, which is what a machine sees when a real cable is
// unplugged. With one veth pair, Pull would have to set a host's own
// interface down, and the kernel would then delete its routes and IPv6
// addresses, turning "the peer stopped answering" into an immediate
// ENETUNREACH. The wire is also the
// one place outside every host, so Blackhole drops packets there and the hosts'
// kernels see no local drop at all.
//
// Addresses come from ranges reserved for benchmarking and documentation, so
// they cannot collide with anything real: cable n carries 198.18.0.0/15
// subnet n (198.18.n.0/24 for n < 256) and 2001:db8:0:n::/64 (n in hex); the
// first host named in Cable gets .1 / ::1, the second .2 / ::2.
//
// # Names and cleanup
//
// Every namespace of a lab is named "tw-<pid>-<random>-<host>" (the wire is
// "...-wire"). The pid lets CleanupStale tell a lab whose process was killed
// from one that is still running, possibly in another test binary.
package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its bind mounts; using it keeps the lab
// inspectable with the usual tools.
const netnsDir = "/run/netns"

const wireName = "wire"

// Lab owns every namespace it creates; see the package documentation for how
// they are named and connected. A Lab's methods may be called from several
// goroutines.
type Lab struct {
	prefix string

	mu     sync.Mutex
	closed bool
	wire   *netlink.Handle // rtnetlink socket inside the wire namespace
	hosts  []*Host
	cables []*Cable
	nftSeq int
}

// New creates an empty lab (just its wire namespace).
func New() (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab: must run as root (creating network namespaces, veth links and nftables rules needs CAP_SYS_ADMIN and CAP_NET_ADMIN)")
	}
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	// Creating the wire namespace claims the prefix (O_EXCL); a clash with a
	// lab of this same process, or a stale one from a dead process that had
	// our pid, just means trying another random part.
	for attempt := 0; ; attempt++ {
		var rnd [2]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, fmt.Errorf("netlab: %w", err)
		}
		l := &Lab{prefix: fmt.Sprintf("tw-%d-%s-", os.Getpid(), hex.EncodeToString(rnd[:]))}
		err := createNamedNetns(l.nsPath(wireName))
		if errors.Is(err, os.ErrExist) && attempt < 10 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("netlab: creating wire namespace: %w", err)
		}
		if err := l.setupWire(); err != nil {
			return nil, errors.Join(err, l.Close())
		}
		return l, nil
	}
}

// Prefix is the name prefix shared by all of this lab's namespaces.
func (l *Lab) Prefix() string { return l.prefix }

func (l *Lab) nsPath(name string) string { return filepath.Join(netnsDir, l.prefix+name) }

func (l *Lab) setupWire() error {
	path := l.nsPath(wireName)
	// The wire only switches frames. Without IPv6 on its links it sends no
	// router solicitations, MLD reports or DAD probes of its own, and with
	// br_netfilter off frames crossing it skip the IP hooks of that namespace.
	err := doInNetns(path, func() error {
		for _, kv := range [][2]string{
			{"net/ipv6/conf/default/disable_ipv6", "1"},
			{"net/ipv6/conf/all/disable_ipv6", "1"},
		} {
			if err := writeSysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		for _, key := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
			if err := writeSysctl("net/bridge/"+key, "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		l.wire = h
		return err
	})
	if err != nil {
		return fmt.Errorf("netlab: setting up wire namespace: %w", err)
	}
	return nil
}

// Close kills every process running in the lab's hosts, waits for them to
// die, deletes every link and namespace, and leaves Host and Cable values
// inert. It may be called more than once and after a failed New, AddHost or
// Cable; it tries every step and reports every failure.
//
// Sockets that the caller still holds open keep their (now unnamed and
// link-less) namespace alive in the kernel until they are closed.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for _, h := range l.hosts {
		errs = append(errs, h.teardown())
	}
	if l.wire != nil {
		// Deleting a wire port destroys its veth pair, so this also removes
		// any host-side link that survived its host's teardown.
		links, err := l.wire.LinkList()
		errs = append(errs, err)
		for _, link := range links {
			if link.Attrs().Name != "lo" {
				if err := l.wire.LinkDel(link); err != nil && !isNotFound(err) {
					errs = append(errs, fmt.Errorf("netlab: deleting %s in wire: %w", link.Attrs().Name, err))
				}
			}
		}
		l.wire.Close()
		l.wire = nil
	}
	if err := deleteNamedNetns(l.nsPath(wireName)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)

// AddHost creates a host: a fresh network namespace with loopback up and IPv6
// enabled without duplicate address detection, so addresses work the moment
// they are added.
func (l *Lab) AddHost(name string) (*Host, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addHost(name)
}

func (l *Lab) addHost(name string) (*Host, error) {
	if l.closed {
		return nil, errClosed
	}
	if !hostNameRE.MatchString(name) || name == wireName {
		return nil, fmt.Errorf("netlab: bad host name %q (letters, digits, - and _, at most 32, not %q)", name, wireName)
	}
	for _, h := range l.hosts {
		if h.name == name {
			return nil, fmt.Errorf("netlab: host %q already exists", name)
		}
	}
	h := &Host{lab: l, name: name, path: l.nsPath(name)}
	if _, err := os.Lstat(h.path); err == nil {
		return nil, fmt.Errorf("netlab: %s exists already", h.path) // not ours to tear down
	}
	if err := h.boot(); err != nil {
		// Partly built: tear it down now rather than leave it to Close.
		return nil, errors.Join(err, h.teardown())
	}
	l.hosts = append(l.hosts, h)
	return h, nil
}

var errClosed = errors.New("netlab: lab is closed")

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// CleanupStale removes the namespaces of labs whose process no longer exists
// (a test binary killed by a timeout or SIGKILL never runs Close), after
// killing whatever still runs inside them. Their veth links go with them.
// Labs of live processes, including this one, are left alone.
func CleanupStale() (removed []string, err error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	var errs []error
	for _, e := range entries {
		pid, ok := ownerPid(e.Name())
		if !ok || processExists(pid) {
			continue
		}
		path := filepath.Join(netnsDir, e.Name())
		id, err := netnsIDOf(path)
		if err != nil {
			id = netnsID{}
		}
		if err := killNetnsProcesses(id, path); err != nil {
			errs = append(errs, fmt.Errorf("netlab: %s: %w", e.Name(), err))
			continue
		}
		if err := deleteNamedNetns(path); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, joinOneLine(errs)
}

// joinOneLine joins errors with "; ": a multi-line error would break the
// one-line rule of tcpwatch's messages.
func joinOneLine(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// ownerPid extracts the pid from "tw-<pid>-<random>-<host>".
func ownerPid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "tw-")
	if !ok {
		return 0, false
	}
	digits, _, ok := strings.Cut(rest, "-")
	if !ok || digits == "" {
		return 0, false
	}
	pid := 0
	for _, c := range digits {
		if c < '0' || c > '9' || pid > 1<<30 {
			return 0, false
		}
		pid = pid*10 + int(c-'0')
	}
	return pid, pid > 0
}

func processExists(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
