package main

// End-to-end tests against OpenSSH from Debian's packages (openssh-server
// and openssh-client, 9.2 in bookworm), in the lab's namespaces, with the
// real tcpwatch command, like servers_test.go does for redis, PostgreSQL and
// nginx. sshd is the forking server of the set: the listener re-executes
// itself for every connection, and it is that per-connection sshd, never
// the listener, that holds the session's socket, so the owner tcpwatch names
// must be the forked one.
//
// sshd listens only on S's lab address; nothing listens on the host.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
	"github.com/tcpwatch/tcpwatch/lab/netlab"
)

const (
	sshdBin   = "/usr/sbin/sshd"
	sshBin    = "/usr/bin/ssh"
	sshKeygen = "/usr/bin/ssh-keygen"
)

// sshServer is a listening sshd made for one test.
type sshServer struct {
	cmd *exec.Cmd // the listener: with -D it stays in the foreground, so its pid is cmd's
	ap  netip.AddrPort
	key string // the client's private key, the only one authorized
	log *lockedBuffer
}

// startSSHD runs sshd in s on addr port 22 only, with its own host key and
// one authorized client key (root, public key only), and waits until it
// sends its banner to c.
func startSSHD(t *testing.T, s, c *netlab.Host, addr netip.Addr) *sshServer {
	t.Helper()
	requireInstalled(t, sshdBin, "openssh-server")
	requireInstalled(t, sshBin, "openssh-client")
	requireInstalled(t, sshKeygen, "openssh-client")
	// sshd refuses to start without its privilege separation directory.
	// Debian's service makes it when it starts (RuntimeDirectory=sshd),
	// and `make deps` installs the package without starting the service.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hostKey, clientKey := filepath.Join(dir, "host_ed25519"), filepath.Join(dir, "client_ed25519")
	for _, k := range []string{hostKey, clientKey} {
		if out, err := exec.Command(sshKeygen, "-q", "-t", "ed25519", "-N", "", "-C", "tcpwatch-test", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	// No Include of /etc/ssh/sshd_config.d: the machine's settings must
	// not change what the tests see. TCPKeepAlive is sshd's default,
	// written out because the keepalive test depends on it.
	cfg := fmt.Sprintf(`HostKey %s
ListenAddress %s
Port 22
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PidFile none
LogLevel VERBOSE
PrintMotd no
PrintLastLog no
TCPKeepAlive yes
ClientAliveInterval 0
`, hostKey, addr, authorized)
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &sshServer{ap: netip.AddrPortFrom(addr, 22), key: clientKey, log: &lockedBuffer{}}
	d.cmd = s.Command(sshdBin, "-D", "-e", "-f", cfgPath)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting sshd: %v", err)
	}
	exited := make(chan struct{})
	go func() { d.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// The listener only; the per-connection sshds left die with
		// the lab's namespace (netlab kills everything in it).
		d.cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", d.log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		banner, err := sshBanner(c, d.ap)
		if err == nil {
			t.Logf("sshd listener pid %d on %s: %s", d.cmd.Process.Pid, d.ap, banner)
			return d
		}
		select {
		case <-exited:
			t.Fatalf("sshd exited: %s", d.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd not answering on %s after 10s: %v\n%s", d.ap, err, d.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sshBanner connects from c to ap and reads the server's identification
// line: sshd only sends it from the process it forked for the connection,
// so it proves sshd accepts, not just that the port is bound.
func sshBanner(c *netlab.Host, ap netip.AddrPort) (string, error) {
	var conn net.Conn
	err := c.Do(func() (err error) {
		conn, err = (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: -1}).Dial("tcp", ap.String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SSH-2.0-OpenSSH_") {
		return "", fmt.Errorf("banner %q: %v", line, err)
	}
	return strings.TrimSpace(line), nil
}

// ssh returns an ssh command run in c that logs in to d as root with d's
// client key and runs remote. The client's own keepalive is off (as
// redisDial's is) so that in the keepalive test only the server probes;
// -F /dev/null keeps the machine's ssh_config out.
func (d *sshServer) ssh(c *netlab.Host, remote ...string) *exec.Cmd {
	args := []string{"-F", "/dev/null", "-i", d.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=5", "-o", "TCPKeepAlive=no", "root@" + d.ap.Addr().String()}
	return c.Command(sshBin, append(args, remote...)...)
}

// sshSession is a long ssh session from C, idle once it has started.
type sshSession struct {
	cmd    *exec.Cmd // ssh in C (netlab's Command execs in place: its pid is ssh's)
	stdin  io.WriteCloser
	stderr *lockedBuffer
	exited chan struct{}

	server, client netip.AddrPort // S's socket of the session, as S sees it
	inode          uint64         // S's socket
	// holders are the processes holding S's socket, found among the
	// listener's descendants, each with its parent chain up to the
	// listener, read while they live.
	holders []int
	chains  map[int][]int
}

// session opens `ssh root@S 'echo ready; exec sleep 600'` from c, its stdin
// a pipe kept open, waits for "ready" (the session is authenticated and
// its command runs), and finds S's socket of it and who holds it.
func (d *sshServer) session(t *testing.T, c *netlab.Host) *sshSession {
	t.Helper()
	sess := &sshSession{stderr: &lockedBuffer{}, exited: make(chan struct{}), chains: map[int][]int{}}
	sess.cmd = d.ssh(c, "echo ready; exec sleep 600")
	var err error
	if sess.stdin, err = sess.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := sess.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sess.cmd.Stderr = sess.stderr
	if err := sess.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		ready <- line
		io.Copy(io.Discard, r)
		sess.cmd.Wait()
		close(sess.exited)
	}()
	t.Cleanup(func() {
		sess.stdin.Close()
		sess.cmd.Process.Kill()
		<-sess.exited
	})
	select {
	case line := <-ready:
		if line != "ready\n" {
			t.Fatalf("ssh session: %q; ssh stderr: %s", line, sess.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("ssh session not ready after 15s; ssh stderr: %s", sess.stderr.String())
	}

	listener := d.cmd.Process.Pid
	var est []procSock
	for _, sk := range procTCP(t, listener) {
		if sk.local == d.ap && sk.state == tcpEstablished {
			est = append(est, sk)
		}
	}
	if len(est) != 1 {
		t.Fatalf("S: %d established sockets on %s, want the session's only: %+v", len(est), d.ap, est)
	}
	sess.server, sess.client, sess.inode = est[0].local, est[0].remote, est[0].inode
	if sess.client.Addr() != addrOf(c, d.ap.Addr().Is6()) {
		t.Fatalf("S's session socket %s>%s is not from C", sess.server, sess.client)
	}
	sess.holders = socketHolders(listener, sess.inode)
	if len(sess.holders) == 0 {
		t.Fatalf("S: no descendant of the sshd listener %d holds socket:[%d]", listener, sess.inode)
	}
	for _, pid := range sess.holders {
		sess.chains[pid] = parentChain(pid, listener)
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Logf("S socket %s>%s inode %d held by pid %d comm %q (%s), parents %v",
			sess.server, sess.client, sess.inode, pid, strings.TrimSpace(string(comm)),
			strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "), sess.chains[pid])
	}
	return sess
}

// descendant says whether pid's parent chain, read while it lived, reaches
// the listener.
func (sess *sshSession) descendant(pid, listener int) bool {
	chain := sess.chains[pid]
	return len(chain) > 0 && chain[len(chain)-1] == listener && pid != listener
}

const tcpEstablished = 1 // TCP_ESTABLISHED, as /proc/net/tcp's st column shows it

type procSock struct {
	local, remote netip.AddrPort
	state         int
	inode         uint64
}

// procTCP lists the TCP sockets of pid's network namespace from
// /proc/PID/net/tcp and tcp6 (which follow that process's namespace, not
// the test's).
func procTCP(t *testing.T, pid int) []procSock {
	t.Helper()
	var out []procSock
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		for _, line := range lines[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 {
				t.Fatalf("/proc/%d/net/%s: malformed line %q", pid, f, line)
			}
			local, err1 := parseProcAddr(fields[1])
			remote, err2 := parseProcAddr(fields[2])
			state, err3 := strconv.ParseUint(fields[3], 16, 8)
			inode, err4 := strconv.ParseUint(fields[9], 10, 64)
			if err := errors.Join(err1, err2, err3, err4); err != nil {
				t.Fatalf("/proc/%d/net/%s: %q: %v", pid, f, line, err)
			}
			out = append(out, procSock{local, remote, int(state), inode})
		}
	}
	return out
}

// parseProcAddr reads /proc/net/tcp's "ADDR:PORT": the address is the
// kernel's bytes printed as native-endian (little on the machines this
// runs on) 32-bit words, the port plain hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || (len(a) != 8 && len(a) != 32) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	var raw []byte
	for i := 0; i < len(a); i += 8 {
		w, err := strconv.ParseUint(a[i:i+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
		}
		raw = append(raw, byte(w), byte(w>>8), byte(w>>16), byte(w>>24))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// socketHolders returns the descendants of root that hold socket:[inode].
func socketHolders(root int, inode uint64) []int {
	want := fmt.Sprintf("socket:[%d]", inode)
	var holders []int
	for _, pid := range descendants(root) {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == want {
				holders = append(holders, pid)
				break
			}
		}
	}
	return holders
}

// descendants lists root's children, their children, and so on.
func descendants(root int) []int {
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
			for _, f := range strings.Fields(string(b)) {
				if child, err := strconv.Atoi(f); err == nil {
					out = append(out, child)
					queue = append(queue, child)
				}
			}
		}
	}
	return out
}

// parentChain follows /proc/PID/stat's ppid from pid up to stop (or init),
// and returns the parents in order, nearest first.
func parentChain(pid, stop int) []int {
	var chain []int
	for pid > 1 && pid != stop {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		// The command name (field 2) may hold spaces and parentheses:
		// count fields after its closing parenthesis.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			break
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			break
		}
		if pid, err = strconv.Atoi(f[1]); err != nil { // field 4, ppid
			break
		}
		chain = append(chain, pid)
	}
	return chain
}

// `ssh root@S true`, five times: sshd runs the command and sends its exit
// status, the client sends SSH2_MSG_DISCONNECT and closes; the
// per-connection sshd reads the disconnect and exits with status 255 (its
// status for every end of a connection, cleanup_exit(255)). Mostly the
// client's FIN arrives first (S: CLOSE_WAIT, then LAST_ACK as sshd exits);
// now and then sshd's exit wins the race (S: ESTABLISHED -> FIN_WAIT1 with
// an owner exiting with 255, then the client's FIN). Both are a session
// ending as asked: nothing failed, so default mode must print nothing, on
// either side.
func TestSSHSessionsEndNormally(t *testing.T) {
	testkit.RequirePrivileged(t)
	families(t, func(t *testing.T, v6 bool) {
		s, c := hosts.Pair(t, "S", "C")
		d := startSSHD(t, s, c, addrOf(s, v6))
		nsS, nsC := hosts.Netns(t, s), hosts.Netns(t, c)

		w := startWatch(t)
		for i := 0; i < 5; i++ {
			cmd := d.ssh(c, "true")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("ssh run %d: %v: %s", i, err, out)
			}
		}
		time.Sleep(1 * time.Second) // the per-connection sshds' exits
		all := w.stop(t, nsS, nsC)
		logNarratives(t, "tcpwatch", all)
		testkit.OneStory(t, "tcpwatch", all, told)
		for _, n := range all {
			t.Errorf("normal ssh session told: %s %s pid=%d comm=%q exit_status=%d errno=%q: %s",
				n.Verdict, tupleOf(n), n.PID, n.Comm, n.ExitStatus, n.Errno, n.Summary)
		}
		if got := strings.Count(d.log.String(), "Accepted publickey for root"); got != 5 {
			t.Errorf("sshd logged %d logins, want 5 (the sessions tcpwatch kept quiet about)", got)
		}
		if t.Failed() {
			t.Logf("tcpwatch output:\n%s", w.stdout.String())
		}
	})
}

// sshd's default `TCPKeepAlive yes` only turns SO_KEEPALIVE on: the timings
// are S's keepalive sysctls, here idle 1 s, interval 1 s, 3 probes. A
// session whose client vanishes (black-holed) is found dead 4 to 5 s
// later: S must tell keepalive_probing then keepalive_timeout, once, naming
// the per-connection sshd that holds the socket (never the listener), with
// the namespace's keepalive figures and all 3 probes counted; C, whose
// kernel sends nothing on an idle session with its keepalive off, nothing.
func TestSSHKeepaliveClientVanishes(t *testing.T) {
	testkit.RequirePrivileged(t)
	families(t, func(t *testing.T, v6 bool) {
		s, c := hosts.Pair(t, "S", "C")
		// Only S: C's keepalive is off anyway, and S's own settings are
		// what tcpwatch must report for S's socket.
		for _, kv := range [][2]string{
			{"net/ipv4/tcp_keepalive_time", "1"},
			{"net/ipv4/tcp_keepalive_intvl", "1"},
			{"net/ipv4/tcp_keepalive_probes", "3"},
		} {
			if err := s.Sysctl(kv[0], kv[1]); err != nil {
				t.Fatal(err)
			}
		}
		d := startSSHD(t, s, c, addrOf(s, v6))
		listener := d.cmd.Process.Pid
		nsS, nsC := hosts.Netns(t, s), hosts.Netns(t, c)

		w := startWatch(t)
		sess := d.session(t, c)
		// Let what the session's start left in flight be acknowledged: the
		// black hole must catch an idle connection, not a retransmission.
		time.Sleep(1 * time.Second)
		undo, err := s.Blackhole(addrOf(c, v6))
		if err != nil {
			t.Fatal(err)
		}
		defer undo()
		// idle 1 s + 3 probes 1 s apart: dead 4 to 5 s after the last
		// ACK (4.1 s and 5.1 s seen: the idle session is already probed,
		// and answering, every second when the black hole starts, so
		// where in that cycle it starts counts); about 3 s more show that
		// nothing follows the final verdict.
		time.Sleep(8 * time.Second)
		all := w.stop(t, nsS, nsC)
		logNarratives(t, "tcpwatch", all)
		testkit.OneStory(t, "tcpwatch", all, told)
		t.Logf("sshd listener pid %d, holders of S's socket %v; ssh pid %d, stderr %q",
			listener, sess.holders, sess.cmd.Process.Pid, sess.stderr.String())

		sk := tupleFrom(sess.server, sess.client)
		for _, n := range all {
			if n.NetNS != nsS || tupleOf(n) != sk {
				t.Errorf("told about another connection than S's session socket %s: %s netns=%d %s pid=%d comm=%q",
					sk, n.Verdict, n.NetNS, tupleOf(n), n.PID, n.Comm)
			}
		}
		got := of(all, sk)
		if len(got) < 2 || got[len(got)-1].Verdict != "keepalive_timeout" {
			t.Fatalf("S %s: verdicts %v, want keepalive_probing ... keepalive_timeout last", sk, verdicts(got))
		}
		for _, n := range got[:len(got)-1] {
			// Probe 2 (the first one unanswered a whole interval) and
			// probe 3 are news; the kernel gives up at the next expiry.
			if n.Verdict != "keepalive_probing" || n.Final {
				t.Errorf("S %s: %s final=%v before keepalive_timeout, want keepalive_probing, not final", sk, n.Verdict, n.Final)
			}
		}
		for _, n := range got {
			if !slices.Contains(sess.holders, int(n.PID)) || !sess.descendant(int(n.PID), listener) ||
				n.Comm != "sshd" || n.OwnerSource != "procfs" {
				t.Errorf("S %s %s: owner pid=%d comm=%q owner_source=%q, want the per-connection sshd holding the socket %v (listener %d, parents %v) from procfs",
					sk, n.Verdict, n.PID, n.Comm, n.OwnerSource, sess.holders, listener, sess.chains[int(n.PID)])
			}
			if uint64(n.Inode) != sess.inode {
				t.Errorf("S %s %s: inode %d, the session's socket is %d", sk, n.Verdict, n.Inode, sess.inode)
			}
			ka := n.Settings
			if !ka.Keepalive || ka.KeepaliveTimeS != 1 || ka.KeepaliveIntvlS != 1 || ka.KeepaliveProbes != 3 {
				t.Errorf("S %s %s: keepalive settings %v idle=%ds intvl=%ds probes=%d, S's sysctls say 1s/1s/3",
					sk, n.Verdict, ka.Keepalive, ka.KeepaliveTimeS, ka.KeepaliveIntvlS, ka.KeepaliveProbes)
			}
		}
		to := got[len(got)-1]
		if !to.Final || to.Errno != "ETIMEDOUT" || to.Probes != 3 {
			t.Errorf("S %s keepalive_timeout: final=%v errno=%q probes=%d, want final, ETIMEDOUT, probes=3 (tcp_keepalive_probes)",
				sk, to.Final, to.Errno, to.Probes)
		}
		if t.Failed() {
			t.Logf("tcpwatch output:\n%s\nstderr:\n%s", w.stdout.String(), w.stderr.String())
		}
	})
}

// The per-connection sshd of a live session killed with SIGKILL: it had
// read everything, so its kernel closes the socket with FIN. S must tell
// local_process_exited with exit_signal 9, naming the killed sshd (not the
// listener). C: OpenSSH's client, on reading that EOF, still sends
// SSH2_MSG_DISCONNECT before it exits; S's socket has no owner left, so S's
// kernel answers the data with RST, which C's socket gets in CLOSE_WAIT
// (errno EPIPE). That is peer_closed (the FIN came first), told in default
// mode because of the reset, naming ssh. Each once, nothing else.
func TestSSHSessionKilled(t *testing.T) {
	testkit.RequirePrivileged(t)
	families(t, func(t *testing.T, v6 bool) {
		s, c := hosts.Pair(t, "S", "C")
		d := startSSHD(t, s, c, addrOf(s, v6))
		listener := d.cmd.Process.Pid
		nsS, nsC := hosts.Netns(t, s), hosts.Netns(t, c)

		w := startWatch(t)
		sess := d.session(t, c)
		// For root, OpenSSH 9.2 keeps no unprivileged child after
		// authentication: the per-connection sshd (the monitor) serves
		// the session itself, alone with the socket, so killing it closes
		// the socket.
		if len(sess.holders) != 1 {
			t.Fatalf("S's session socket is held by %v, want one per-connection sshd", sess.holders)
		}
		victim := sess.holders[0]
		if !sess.descendant(victim, listener) {
			t.Fatalf("the holder %d of S's socket is not a descendant of the sshd listener %d: parents %v", victim, listener, sess.chains[victim])
		}
		time.Sleep(300 * time.Millisecond)
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", victim, err)
		}
		select {
		case <-sess.exited:
			if code := sess.cmd.ProcessState.ExitCode(); code != 255 || !strings.Contains(sess.stderr.String(), "closed by remote host") {
				t.Errorf("ssh: exit %d, stderr %q; want 255 and \"closed by remote host\"", code, sess.stderr.String())
			}
		case <-time.After(5 * time.Second):
			t.Errorf("ssh still running 5s after its sshd was killed")
		}
		time.Sleep(1500 * time.Millisecond)
		all := w.stop(t, nsS, nsC)
		logNarratives(t, "tcpwatch", all)
		testkit.OneStory(t, "tcpwatch", all, told)
		t.Logf("sshd listener pid %d, killed sshd pid %d (parents %v), ssh pid %d; ssh stderr %q",
			listener, victim, sess.chains[victim], sess.cmd.Process.Pid, sess.stderr.String())

		sk := tupleFrom(sess.server, sess.client)
		ck := tupleFrom(sess.client, sess.server)
		for _, n := range all {
			if !(n.NetNS == nsS && tupleOf(n) == sk) && !(n.NetNS == nsC && tupleOf(n) == ck) {
				t.Errorf("told about another connection than the session's: %s netns=%d %s pid=%d comm=%q",
					n.Verdict, n.NetNS, tupleOf(n), n.PID, n.Comm)
			}
		}
		if got := of(all, sk); len(got) != 1 {
			t.Errorf("S %s: verdicts %v, want one local_process_exited", sk, verdicts(got))
		} else if n := got[0]; n.Verdict != "local_process_exited" || !n.Final || n.ExitSignal != 9 || n.ExitStatus != 0 ||
			n.SentReset || int(n.PID) != victim || n.Comm != "sshd" || n.OwnerSource != "close" || uint64(n.Inode) != sess.inode {
			// owner_source close: the owner is the task that closed the
			// socket, the dying sshd itself, in do_exit.
			t.Errorf("S %s: %s final=%v exit_signal=%d exit_status=%d sent_reset=%v pid=%d comm=%q owner_source=%q inode=%d; "+
				"want final local_process_exited, signal 9, closed with FIN, the killed sshd %d (owner_source close), inode %d",
				sk, n.Verdict, n.Final, n.ExitSignal, n.ExitStatus, n.SentReset, n.PID, n.Comm, n.OwnerSource, n.Inode, victim, sess.inode)
		}
		if got := of(all, ck); len(got) != 1 {
			t.Errorf("C %s: verdicts %v, want one peer_closed", ck, verdicts(got))
		} else if n := got[0]; n.Verdict != "peer_closed" || !n.Final || n.Errno != "EPIPE" ||
			int(n.PID) != sess.cmd.Process.Pid || n.Comm != "ssh" || n.OwnerSource != "connect" {
			t.Errorf("C %s: %s final=%v errno=%q pid=%d comm=%q owner_source=%q; want final peer_closed, EPIPE (RST in CLOSE_WAIT), ssh pid %d from connect",
				ck, n.Verdict, n.Final, n.Errno, n.PID, n.Comm, n.OwnerSource, sess.cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("tcpwatch output:\n%s", w.stdout.String())
		}
	})
}
