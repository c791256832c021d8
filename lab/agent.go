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
	serveRead    int64
	redial       time.Duration
	sendFirst    int64
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
	fs.Int64Var(&o.serveRead, "serve-read", 0, "server with --serve-close-after: read this many bytes of each connection before the wait (what is unread at close() would turn its FIN into an RST)")
	fs.Int64Var(&o.sendFirst, "send-first", 0, "client: write this many bytes as soon as connected, before anything else (--redial-after: before waiting for the server's close)")
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
		if a.o.serveClose > 0 {
			for {
				c, err := ln.Accept()
				if err != nil {
					return err
				}
				a.report("accepted", nil, c)
				go func() {
					if a.o.serveRead > 0 {
						n, err := io.CopyN(io.Discard, c, a.o.serveRead)
						a.report(fmt.Sprintf("read %d bytes", n), err, c)
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
		if a.o.sendFirst > 0 {
			n, err := io.CopyN(conn, zeros{}, a.o.sendFirst)
			a.report(fmt.Sprintf("wrote %d bytes", n), err, conn)
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

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
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
