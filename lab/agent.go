package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// The lab's applications are this same executable, started in a host's
// namespace as `tcpwatch lab agent ...`: separate processes, so that a
// crash is a real process death and a reboot really kills them. The watch
// command never sees them: they enter through the lab's own command.

// AgentCommand is the command line prefix that starts a lab application.
var AgentCommand = []string{"lab", "agent"}

// AgentArgs reports whether args start a lab application, and its own
// arguments. Test binaries that double as the lab's applications check it
// in TestMain.
func AgentArgs(args []string) ([]string, bool) {
	if len(args) >= 2 && args[0] == AgentCommand[0] && args[1] == AgentCommand[1] {
		return args[2:], true
	}
	return nil, false
}

// AppEvent is one line an application reports on its stdout: what it did
// and what its system calls returned.
type AppEvent struct {
	Time  time.Time `json:"time"`
	Role  string    `json:"role"`
	PID   int       `json:"pid"`
	What  string    `json:"what"`
	Errno string    `json:"errno,omitempty"`
	Local string    `json:"local,omitempty"`
	Peer  string    `json:"peer,omitempty"`
}

type agentOptions struct {
	role         string
	addr         string
	localPort    int
	sendEvery    time.Duration
	sendFor      time.Duration
	writeAfter   time.Duration
	read         bool
	sendOnAccept int
	keepalive    []string
	userTimeout  time.Duration
	linger0      bool
	closeAfter   time.Duration
	connectTime  time.Duration
	closeOnError bool
	hold         time.Duration
	accept       int
	reconnect    time.Duration
	churn        int
	serveClose   time.Duration
	serveAhead   int64
	redial       time.Duration
	sendToFIN    bool
}

// AgentMain runs a lab application and returns its exit status.
func AgentMain(args []string) int {
	enc := json.NewEncoder(os.Stdout)
	o := agentOptions{}
	fs := pflag.NewFlagSet("lab-agent", pflag.ContinueOnError)
	fs.StringVar(&o.role, "role", "", "client or server")
	fs.StringVar(&o.addr, "addr", "", "server: listen address; client: address to connect to")
	fs.IntVar(&o.localPort, "local-port", 0, "client: bind to this local port first (with SO_REUSEADDR)")
	fs.DurationVar(&o.sendEvery, "send-every", 0, "write 100 bytes this often (0: never)")
	fs.DurationVar(&o.sendFor, "send-for", 0, "stop the periodic writes after this long (0: never)")
	fs.DurationVar(&o.writeAfter, "write-after", 0, "write once after this long (0: never)")
	fs.BoolVar(&o.read, "read", true, "read everything that arrives")
	fs.IntVar(&o.sendOnAccept, "send-on-connect", 0, "write this many bytes as soon as connected")
	fs.StringSliceVar(&o.keepalive, "keepalive", []string{"off"}, "off; go (Go's default: on, 15s idle, 15s interval, 9 probes); or idle,interval,count in seconds")
	fs.DurationVar(&o.userTimeout, "user-timeout", 0, "TCP_USER_TIMEOUT")
	fs.BoolVar(&o.linger0, "linger0", false, "SO_LINGER with a zero timeout (close sends RST)")
	fs.DurationVar(&o.closeAfter, "close-after", 0, "close the connection after this long (0: never)")
	fs.BoolVar(&o.closeOnError, "close-on-error", false, "close the socket at once when a read fails, as psql or redis-cli do")
	fs.DurationVar(&o.connectTime, "connect-timeout", 0, "client: give up on connect() after this long, as client libraries do (0: the kernel's budget)")
	fs.DurationVar(&o.hold, "hold", time.Hour, "exit after this long")
	fs.IntVar(&o.accept, "accept", 1, "server: accept this many connections (the last one is the one it works with)")
	fs.DurationVar(&o.reconnect, "reconnect-after", 0, "client: close at once, then connect again from the same local port after this long")
	fs.DurationVar(&o.serveClose, "serve-close-after", 0, "server: accept every connection and close each this long after (the server closes first: TIME_WAIT on its side)")
	fs.Int64Var(&o.serveAhead, "serve-ahead-of-isn", 0, "server: accept every connection, read until it is this many bytes ahead of the clock in the client's initial sequence numbers (secure_tcp_seq: one a 64 ns), then shut down its sending side first (TIME_WAIT on this side) and read the rest")
	fs.BoolVar(&o.sendToFIN, "send-until-fin", false, "client: write as soon as connected, until the server's FIN (with --redial-after: then close and connect again)")
	fs.DurationVar(&o.redial, "redial-after", 0, "client: when the server closes, close too, then connect again from the same local port after this long")
	fs.IntVar(&o.churn, "churn", 0, "client: open and close (this side first, leaving TIME_WAIT) this many connections, then keep the last one")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if k := o.keepalive; !(len(k) == 1 && (k[0] == "off" || k[0] == "go")) && len(k) != 3 {
		fmt.Fprintf(os.Stderr, "lab-agent: --keepalive %q: off, go, or idle,interval,count\n", strings.Join(k, ","))
		return 2
	}
	a := &agent{o: o, enc: enc, pid: os.Getpid()}
	if err := a.run(); err != nil {
		a.report("failed", err, nil)
		return 1
	}
	return 0
}

type agent struct {
	o   agentOptions
	enc *json.Encoder
	pid int
}

func (a *agent) report(what string, err error, c net.Conn) {
	ev := AppEvent{Time: time.Now(), Role: a.o.role, PID: a.pid, What: what, Errno: errnoOf(err)}
	if c != nil {
		ev.Local, ev.Peer = c.LocalAddr().String(), c.RemoteAddr().String()
	}
	if err != nil && ev.Errno == "" {
		ev.What += ": " + err.Error()
	}
	_ = a.enc.Encode(ev)
}

// errnoOf names the errno behind a network error, as the application saw it.
func errnoOf(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return tcp.ErrnoName(int32(errno))
	}
	if errors.Is(err, io.EOF) {
		return "EOF"
	}
	return ""
}

func (a *agent) run() error {
	var conn *net.TCPConn
	switch a.o.role {
	case "server":
		lc := net.ListenConfig{KeepAlive: a.goKeepalive()}
		ln, err := lc.Listen(context.Background(), "tcp", a.o.addr)
		if err != nil {
			return err
		}
		a.report("listening", nil, nil)
		if a.o.serveClose > 0 || a.o.serveAhead > 0 {
			for {
				c, err := ln.Accept()
				if err != nil {
					return err
				}
				a.report("accepted", nil, c)
				go func() {
					if a.o.serveAhead > 0 {
						a.outrunISN(c.(*net.TCPConn))
						return
					}
					time.Sleep(a.o.serveClose)
					a.report("closed", c.Close(), c)
					drain(c)
				}()
			}
		}
		for i := 0; i < max(a.o.accept, 1); i++ {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			a.report("accepted", nil, c)
			if i < a.o.accept-1 {
				go drain(c) // an earlier connection: read it to its end, then close
				continue
			}
			conn = c.(*net.TCPConn)
		}
		ln.Close()
	case "client":
		d := net.Dialer{Timeout: a.o.connectTime, KeepAlive: a.goKeepalive()}
		if a.o.localPort != 0 {
			d.LocalAddr = &net.TCPAddr{Port: a.o.localPort}
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				})
				return errors.Join(err, serr)
			}
		}
		for i := 1; i < a.o.churn; i++ {
			c, err := d.Dial("tcp", a.o.addr)
			if err != nil {
				a.report(fmt.Sprintf("connect %d failed", i), err, nil)
				return nil
			}
			c.Close()
		}
		if a.o.churn > 1 {
			a.report(fmt.Sprintf("opened and closed %d connections", a.o.churn-1), nil, nil)
		}
		a.report("connecting", nil, nil)
		c, err := d.Dial("tcp", a.o.addr)
		if err != nil {
			a.report("connect failed", err, nil)
			return nil
		}
		conn = c.(*net.TCPConn)
		a.report("connected", nil, conn)
		if a.o.sendToFIN {
			a.sendUntilFIN(conn)
		}
		if a.o.redial > 0 {
			// The server closes first: read to its FIN, close, dial again.
			_, _ = io.Copy(io.Discard, conn)
			conn.Close()
			a.report("closed after the peer's FIN", nil, nil)
			time.Sleep(a.o.redial)
			c, err := d.Dial("tcp", a.o.addr)
			if err != nil {
				a.report("reconnect failed", err, nil)
				return nil
			}
			conn = c.(*net.TCPConn)
			a.report("reconnected", nil, conn)
		}
		if a.o.reconnect > 0 {
			// Closing first leaves this side's 4-tuple in TIME_WAIT.
			conn.Close()
			a.report("closed", nil, nil)
			time.Sleep(a.o.reconnect)
			c, err := d.Dial("tcp", a.o.addr)
			if err != nil {
				a.report("reconnect failed", err, nil)
				return nil
			}
			conn = c.(*net.TCPConn)
			a.report("reconnected", nil, conn)
		}
	default:
		return fmt.Errorf("unknown role %q", a.o.role)
	}
	if err := a.configure(conn); err != nil {
		return err
	}
	if a.o.sendOnAccept > 0 {
		if _, err := conn.Write(make([]byte, a.o.sendOnAccept)); err != nil {
			a.report("write failed", err, conn)
		}
	}
	done := make(chan struct{})
	if a.o.read {
		go a.reader(conn, done)
	}
	a.writer(conn, done)
	return nil
}

// isnClock is how fast a connecting socket's initial sequence number for a
// given 4-tuple moves on: secure_tcp_seq() adds ktime_get_real_ns() >> 6.
const isnClock = 1e9 / 64 // a second

// outrunLimit: how long outrunISN reads before it gives up: a machine
// (an emulator) whose transfer stays slower than isnClock never gets ahead.
const outrunLimit = 20 * time.Second

// outrunISN makes the 4-tuple's TIME_WAIT on this side expect a sequence
// number the client's next connect() cannot reach: it reads until what it
// read is serveAhead bytes past what the ISN clock gained since the
// accept (the client's next SYN, on the same 4-tuple, starts from that
// clock), then sends its FIN first while the client still writes, reads
// the rest to the client's FIN (nothing unread: a FIN, not an RST) and
// closes. The figures are reported: how fast the transfer ran, how far
// ahead of the clock it stopped.
func (a *agent) outrunISN(c *net.TCPConn) {
	start := time.Now()
	buf := make([]byte, 256<<10)
	var read, ahead int64
	var err error
	for {
		// What the client's next SYN would start from, against what this
		// side's TIME_WAIT would expect: the clock moved on, the data more.
		ahead = read - int64(time.Since(start).Seconds()*isnClock)
		if ahead >= a.o.serveAhead || time.Since(start) >= outrunLimit {
			break
		}
		var n int
		n, err = c.Read(buf)
		read += int64(n)
		if err != nil {
			break
		}
	}
	took := time.Since(start)
	rate := float64(read) / took.Seconds() / 1e6
	switch {
	case err != nil:
		a.report(fmt.Sprintf("read %d bytes in %s", read, took.Round(time.Millisecond)), err, c)
		c.Close()
		return
	case ahead < a.o.serveAhead:
		a.report(fmt.Sprintf("too slow: read %d bytes in %s (%.1f MB/s), slower than the ISN clock (%.1f MB/s): the client's next SYN will be newer",
			read, took.Round(time.Millisecond), rate, isnClock/1e6), nil, c)
	default:
		a.report(fmt.Sprintf("ahead: read %d bytes in %s (%.1f MB/s), %d ahead of the ISN clock (%.1f MB/s); closing first",
			read, took.Round(time.Millisecond), rate, ahead, isnClock/1e6), nil, c)
	}
	err = c.CloseWrite()
	rest, rerr := io.Copy(io.Discard, c)
	a.report(fmt.Sprintf("closed: read %d bytes more to the client's FIN", rest), errors.Join(err, rerr), c)
	c.Close()
}

// sendUntilFIN writes until the server's FIN arrives (read by a goroutine
// meanwhile: the server closes first), then returns.
func (a *agent) sendUntilFIN(c *net.TCPConn) {
	var fin atomic.Bool
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, c)
		fin.Store(true)
		close(done)
	}()
	buf := make([]byte, 256<<10)
	var sent int64
	var err error
	for !fin.Load() {
		var n int
		n, err = c.Write(buf)
		sent += int64(n)
		if err != nil {
			break
		}
	}
	<-done
	a.report(fmt.Sprintf("wrote %d bytes until the server's FIN", sent), err, c)
}

func drain(c net.Conn) {
	_, _ = io.Copy(io.Discard, c)
	c.Close()
}

// goKeepalive is what net.Dialer and net.ListenConfig get as KeepAlive:
// Go turns keepalive on by default (0: 15s idle, 15s interval, 9 probes),
// so every lab application says what it wants. -1 leaves SO_KEEPALIVE
// off; explicit values are set in configure.
func (a *agent) goKeepalive() time.Duration {
	if len(a.o.keepalive) == 1 && a.o.keepalive[0] == "go" {
		return 0
	}
	return -1
}

func (a *agent) configure(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		set := func(level, opt, v int) {
			if e := unix.SetsockoptInt(int(fd), level, opt, v); e != nil && serr == nil {
				serr = e
			}
		}
		if len(a.o.keepalive) == 3 {
			var idle, intvl, cnt int
			fmt.Sscan(strings.Join(a.o.keepalive, " "), &idle, &intvl, &cnt)
			set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
			set(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, idle)
			set(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, intvl)
			set(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, cnt)
		}
		if a.o.userTimeout > 0 {
			set(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(a.o.userTimeout/time.Millisecond))
		}
		if a.o.linger0 {
			if e := unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); e != nil {
				serr = e
			}
		}
	})
	return errors.Join(err, serr)
}

func (a *agent) reader(c *net.TCPConn, done chan struct{}) {
	buf := make([]byte, 64<<10)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		select {
		case <-done:
			return // our own close
		default:
		}
		if errors.Is(err, io.EOF) {
			a.report("read returned EOF (peer closed)", nil, c)
		} else {
			a.report("read failed", err, c)
			if a.o.closeOnError {
				// The writer may close too: a second Close only fails.
				a.report("closed after the error", c.Close(), nil)
			}
		}
		return
	}
}

func (a *agent) writer(c *net.TCPConn, done chan struct{}) {
	start := time.Now()
	var tick <-chan time.Time
	if a.o.sendEvery > 0 {
		t := time.NewTicker(a.o.sendEvery)
		defer t.Stop()
		tick = t.C
	}
	var writeOnce, closeAt <-chan time.Time
	if a.o.writeAfter > 0 {
		writeOnce = time.After(a.o.writeAfter)
	}
	if a.o.closeAfter > 0 {
		closeAt = time.After(a.o.closeAfter)
	}
	end := time.After(a.o.hold)
	// The lab steers an application through its stdin: "write", "close",
	// "read" (an application that did not read starts reading).
	cmds := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- strings.TrimSpace(sc.Text())
		}
	}()
	payload := make([]byte, 100)
	writeFailed := false
	write := func() {
		if writeFailed {
			return
		}
		if _, err := c.Write(payload); err != nil {
			writeFailed = true
			a.report("write failed", err, c)
		}
	}
	for {
		select {
		case <-tick:
			if a.o.sendFor == 0 || time.Since(start) < a.o.sendFor {
				write()
			}
		case <-writeOnce:
			write()
			a.report("wrote once", nil, c)
		case cmd := <-cmds:
			switch cmd {
			case "write":
				writeFailed = false
				write()
				a.report("wrote once", nil, c)
			case "close":
				a.close(c, done)
			case "read":
				if !a.o.read {
					a.o.read = true
					go a.reader(c, done)
					a.report("reading", nil, c)
				}
			}
		case <-closeAt:
			a.close(c, done)
		case <-end:
			return
		}
	}
}

func (a *agent) close(c *net.TCPConn, done chan struct{}) {
	select {
	case <-done:
		return
	default:
	}
	close(done)
	err := c.Close()
	a.report("closed", err, nil)
}
