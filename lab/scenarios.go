package lab

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer"
	"github.com/tcpwatch/tcpwatch/tracer/exposure"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// Scenario is one failure the lab can reproduce. A is the client host
// (tcpwatch's point of view in scenarios.md), B the server.
type Scenario struct {
	Name    string
	Row     int // row of docs/scenarios.md
	Summary string
	IPv6    bool
	Router  bool
	// Expect lists, per host, verdicts that must be given in this order.
	Expect map[string][]tracker.Verdict
	// Forbid lists verdicts that must not be given.
	Forbid map[string][]tracker.Verdict
	// AppErrno is, per host, the error its application must see.
	AppErrno map[string]string
	// ExpectWords lists, per host, phrases that the summaries told about
	// it (narratives' and notices') must contain (each in at least one).
	ExpectWords map[string][]string
	// ExpectNotice lists, per host, notices that must be given;
	// ForbidNotice, notices that must not.
	ExpectNotice map[string][]string
	ForbidNotice map[string][]string
	// Sysctls are set in A before the applications start; SysctlsB in B.
	Sysctls  map[string]string
	SysctlsB map[string]string
	// Timeout is how long the scenario needs at least, when the kernel
	// decides with settings the lab does not shorten (Go's own keepalive).
	Timeout time.Duration
	// ToldFromTimeWaitDrops names the hosts whose expected notices and
	// words are told from a SYN or RST a TIME_WAIT dropped, which needs
	// kfree_skb's rx_sk (6.11+). On an older kernel the scenario still
	// runs and waits for the rest only: what it cannot be told stays
	// missing in its result (lab/kernels/expect.json allows it there).
	ToldFromTimeWaitDrops []string
	Act                   func(r *run) error
}

const port = 8080

// finals is what a scenario in which nothing ends A's connection forbids
// A to tell: every registered verdict (a new one included) but closing
// its own side normally and an outage survived.
var finals = words.Verdicts(func(e *words.Entry) bool {
	return e.Verdict != tracker.LocalClosed && e.Verdict != tracker.Recovered
})

// Scenarios is the catalogue, in scenarios.md order.
var Scenarios = withIPv6([]*Scenario{
	{
		Name: "process-crash", Row: 1,
		Summary: "B's server is killed (kill -9) with an empty receive buffer while A keeps writing",
		Expect:  map[string][]tracker.Verdict{"A": {tracker.PeerClosed}, "B": {tracker.LocalProcessExited}},
		// A writes when told, not on a timer: a write every 200 ms could
		// reach B between its server's last read and the kill (on a slow
		// arm64 guest it did), and B's kernel then rightly resets for the
		// unread data (process-crash-unread's story, not this one's).
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r)); err != nil {
				return err
			}
			r.step("A's client writes; B's server reads it")
			if err := r.tell("A", "write"); err != nil {
				return err
			}
			// The command is read by A's client in its own time: both
			// queues are empty before the write too, and on a slow guest
			// the kill came first once (A then wrote to a dead socket).
			if err := r.waitAppSaid("A", "wrote once"); err != nil {
				return err
			}
			if err := r.waitDrained("B's server to have read all A wrote"); err != nil {
				return err
			}
			if err := r.killServer("its receive buffer is empty (all A wrote was read): its kernel will send FIN"); err != nil {
				return err
			}
			if err := r.waitAppSaid("A", "read returned EOF (peer closed)"); err != nil {
				return err
			}
			r.step("A's client writes again, to a peer with no socket: B's kernel answers RST")
			return r.then(r.tell("A", "write"))
		},
	},
	{
		Name: "process-crash-unread", Row: 2,
		Summary:  "B's server is killed with data it never read: its kernel resets instead of closing",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.PeerReset}, "B": {tracker.LocalProcessExited}},
		AppErrno: map[string]string{"A": "ECONNRESET"},
		Act: func(r *run) error {
			if err := r.connect(server(r, "--read=false"), client(r, "--send-on-connect=1000")); err != nil {
				return err
			}
			if err := r.sleep(300 * time.Millisecond); err != nil {
				return err
			}
			return r.then(r.killServer("1000 bytes sit unread in its receive buffer: its kernel will send RST"))
		},
	},
	{
		Name: "host-down-idle", Row: 3,
		Summary: "B's host vanishes while the connection is idle and has no keepalive: nothing ever notices",
		Forbid:  map[string][]tracker.Verdict{"A": finals},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--keepalive=off")); err != nil {
				return err
			}
			if err := r.pull(); err != nil {
				return err
			}
			if err := r.sleep(4 * time.Second); err != nil {
				return err
			}
			return r.reportExposure("A")
		},
	},
	{
		Name: "host-down-idle-go-keepalive", Row: 3,
		Summary:  "the same idle connection from a client that keeps Go's default keepalive (on: 15s idle, 9 probes 15s apart, set on the socket): the kernel notices after 150s",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.KeepaliveProbing, tracker.KeepaliveTimeout}},
		AppErrno: map[string]string{"A": "ETIMEDOUT"},
		// 15s + 9 × 15s, counted from the last ACK, and the lab's margin.
		Timeout: 150*time.Second + 20*time.Second,
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--keepalive=go")); err != nil {
				return err
			}
			if err := r.reportExposure("A"); err != nil {
				return err
			}
			if err := r.pull(); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "host-down-idle-mixed", Row: 3,
		Summary: "four idle clients of one server, each with its own settings (no keepalive; Go's default keepalive; keepalive 4s/2s/3; TCP_USER_TIMEOUT 8s and one write), and B's cable is pulled: each learns it when its own settings say, or never",
		Expect: map[string][]tracker.Verdict{"A": {tracker.KeepaliveTimeout,
			oneOf(tracker.RetransmitTimeout, tracker.HostUnreachable), tracker.KeepaliveProbing}},
		AppErrno: map[string]string{"A": "ETIMEDOUT"},
		// Go's second probe, the last verdict waited for, comes 30s after
		// the last ACK; the rest is margin for slow guests.
		Timeout: 60 * time.Second,
		Act: func(r *run) error {
			if err := r.startApp("B", server(r, "--accept=4")...); err != nil {
				return err
			}
			if err := r.waitAppSaid("B", "listening"); err != nil {
				return err
			}
			for _, args := range [][]string{{"--keepalive=off"}, {"--keepalive=go"}, {"--keepalive=4,2,3"},
				{"--keepalive=off", "--user-timeout=8s", "--write-after=5s"}} {
				if err := r.startApp("A", client(r, args...)...); err != nil {
					return err
				}
				if err := r.waitAppSaid("A", "connected"); err != nil {
					return err
				}
			}
			r.step("A's four clients are connected to %s: no keepalive; Go's default; keepalive 4s/2s/3; TCP_USER_TIMEOUT 8s (it writes once at 5s)", r.serverAddr(port))
			// Idle a while: time to look at them with tcpwatch exposure.
			if err := r.sleep(3 * time.Second); err != nil {
				return err
			}
			if err := r.reportExposure("A"); err != nil {
				return err
			}
			if err := r.pull(); err != nil {
				return err
			}
			if err := r.waitExpected(); err != nil {
				return err
			}
			return r.reportExposure("A")
		},
	},
	{
		Name: "host-down", Row: 4,
		Summary: "B's host dies (nothing leaves or answers) while A keeps sending: A retransmits until tcp_retries2's budget runs out",
		Expect:  map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.RetransmitTimeout}},
		// The black hole is in the wire: every retransmission leaves A.
		ExpectWords: map[string][]string{"A": {"left this host; none answered"}},
		AppErrno:    map[string]string{"A": "ETIMEDOUT"},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms")); err != nil {
				return err
			}
			if _, err := r.blackhole("B died: from now on nothing leaves B and nothing reaches it"); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "host-down-app-closes", Row: 4,
		Summary:  "as host-down, but A's client closes its socket as soon as it gets the error, as psql or redis-cli do: the kernel decided about a socket the client held, not an orphan",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.RetransmitTimeout}},
		AppErrno: map[string]string{"A": "ETIMEDOUT"},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms", "--close-on-error")); err != nil {
				return err
			}
			if _, err := r.blackhole("B died: from now on nothing leaves B and nothing reaches it"); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "process-killed-in-outage", Row: 4,
		Summary: "B's host dies while A sends; A's client, blocked in recv(), is killed mid-outage: its death is the story's end, with the outage it was in",
		Expect:  map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.LocalProcessExited}},
		Forbid:  map[string][]tracker.Verdict{"A": {tracker.RetransmitTimeout, tracker.HostUnreachable}},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms")); err != nil {
				return err
			}
			if _, err := r.blackhole("B died: from now on nothing leaves B and nothing reaches it"); err != nil {
				return err
			}
			if err := r.waitVerdict("A", tracker.Stalled); err != nil {
				return err
			}
			r.step("killed A's client with SIGKILL while it waits in recv(): its socket lives on as an orphan, still retransmitting")
			if err := r.kill("A", syscall.SIGKILL); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "cable-pull", Row: 4,
		Summary: "the cable is pulled while A sends, and never put back: A retransmits, then gives up (EHOSTUNREACH if neighbour discovery failed first)",
		Expect:  map[string][]tracker.Verdict{"A": {tracker.Stalled, oneOf(tracker.RetransmitTimeout, tracker.HostUnreachable)}},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms")); err != nil {
				return err
			}
			if err := r.pull(); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "cable-replug", Row: 5,
		Summary: "the cable is pulled while A sends and put back before the budget runs out: the connection survives",
		Expect:  map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.Recovered}},
		Forbid:  map[string][]tracker.Verdict{"A": {tracker.RetransmitTimeout, tracker.HostUnreachable}},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms")); err != nil {
				return err
			}
			if err := r.pull(); err != nil {
				return err
			}
			if err := r.sleep(r.opt.ReplugAfter); err != nil {
				return err
			}
			if err := r.plug(); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "cable-replug-late", Row: 6,
		Summary:  "the cable is put back after A gave up; then B writes, and A's kernel, with no socket left, answers RST",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.RetransmitTimeout}, "B": {tracker.PeerReset}},
		AppErrno: map[string]string{"A": "ETIMEDOUT"},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms")); err != nil {
				return err
			}
			if err := r.pull(); err != nil {
				return err
			}
			if err := r.waitVerdict("A", tracker.RetransmitTimeout); err != nil {
				return err
			}
			if err := r.plug(); err != nil {
				return err
			}
			// Let the link and the neighbour entries come back first, so
			// B's write reaches A at once: a write that is retransmitted
			// into the still-dead link before A's RST is a different story
			// (peer_lost_state).
			if err := r.sleep(time.Second); err != nil {
				return err
			}
			r.step("B's server writes to the connection A has forgotten")
			if err := r.tell("B", "write"); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "host-reboot", Row: 7,
		Summary: "B's host crashes and reboots while A sends: the rebooted B answers A's retransmission with RST",
		Expect:  map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.PeerLostState}},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms")); err != nil {
				return err
			}
			if err := r.reboot(); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "keepalive-dead", Row: 8,
		Summary:  "an idle connection with keepalive on; B's host vanishes: the probes go unanswered and the kernel kills it",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.KeepaliveProbing, tracker.KeepaliveTimeout}},
		AppErrno: map[string]string{"A": "ETIMEDOUT"},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, keepalive(r))); err != nil {
				return err
			}
			if _, err := r.blackhole("B's host is gone: nothing reaches it, nothing comes back"); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "keepalive-reboot", Row: 9,
		Summary: "an idle connection with keepalive on; B reboots: it answers the first probe with RST",
		Expect:  map[string][]tracker.Verdict{"A": {tracker.PeerLostState}},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, keepalive(r))); err != nil {
				return err
			}
			if err := r.reboot(); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "keepalive-kill-joined", Row: 9,
		Summary: "an idle connection with keepalive on B's side only; the path goes dark until B's keepalive ends the connection, then comes back: A's next write meets B's RST, and tcpwatch, seeing both ends, joins them",
		Expect: map[string][]tracker.Verdict{"A": {tracker.PeerReset},
			"B": {tracker.KeepaliveProbing, tracker.KeepaliveTimeout}},
		Act: func(r *run) error {
			if err := r.connect(server(r, keepalive(r)), client(r)); err != nil {
				return err
			}
			undo, err := r.blackhole("the path between A and B goes dark")
			if err != nil {
				return err
			}
			if err := r.waitVerdict("B", tracker.KeepaliveTimeout); err != nil {
				return err
			}
			if err := undo(); err != nil {
				return err
			}
			r.step("the path is back; A's client writes")
			if err := r.tell("A", "write"); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "keepalive-alive", Row: 10,
		Summary: "an idle connection with keepalive on and B alive: each probe is answered, nothing to report",
		Forbid:  map[string][]tracker.Verdict{"A": finals},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, keepalive(r))); err != nil {
				return err
			}
			r.step("waiting through three keepalive periods: each probe is answered (tcpwatch --all shows them)")
			return r.sleep(3*r.opt.KeepaliveTime + 500*time.Millisecond)
		},
	},
	{
		Name: "router-unreachable", Row: 11, Router: true,
		Summary:  "a router between A and B loses its route to B and answers A's packets with ICMP host unreachable",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.HostUnreachable}},
		AppErrno: map[string]string{"A": "EHOSTUNREACH"},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms")); err != nil {
				return err
			}
			if _, err := r.hosts["R"].RouteUnreachable(r.hosts["B"].Addr4()); err != nil {
				return err
			}
			r.step("router R lost its route to B: it answers with ICMP host unreachable")
			return r.waitExpected()
		},
	},
	{
		Name: "local-abort-unread", Row: 12,
		Summary:  "A's application closes its socket with data it never read: A's kernel resets the connection",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.LocalAbort}, "B": {tracker.PeerReset}},
		AppErrno: map[string]string{"B": "ECONNRESET"},
		Act: func(r *run) error {
			if err := r.connect(server(r, "--send-on-connect=1000"), client(r, "--read=false")); err != nil {
				return err
			}
			if err := r.sleep(300 * time.Millisecond); err != nil {
				return err
			}
			r.step("A's client closes the socket with 1000 unread bytes")
			if err := r.tell("A", "close"); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "local-abort-linger", Row: 12,
		Summary:  "A's application sets SO_LINGER to 0 and closes: an abortive close, RST instead of FIN",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.LocalAbort}, "B": {tracker.PeerReset}},
		AppErrno: map[string]string{"B": "ECONNRESET"},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--linger0")); err != nil {
				return err
			}
			r.step("A's client closes the socket with SO_LINGER {on, 0}")
			if err := r.tell("A", "close"); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "connect-refused", Row: 13,
		Summary:  "A connects to a port of B where nothing listens: B's kernel answers the SYN with RST",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.ConnectRefused}},
		AppErrno: map[string]string{"A": "ECONNREFUSED"},
		Act: func(r *run) error {
			if err := r.startApp("A", client(r)...); err != nil {
				return err
			}
			r.step("A connects to %s, where nothing listens", r.serverAddr(port))
			return r.waitExpected()
		},
	},
	{
		Name: "connect-unreachable", Row: 13,
		Summary: "A connects to an address on its own link where no host answers ARP: the SYN never leaves and connect() fails with EHOSTUNREACH",
		Expect:  map[string][]tracker.Verdict{"A": {tracker.HostUnreachable}},
		// ARP gives up after about 3 s (3 solicitations 1 s apart): the SYN
		// budget must outlast it, or connect() times out first.
		Sysctls:  map[string]string{"net/ipv4/tcp_syn_retries": "3"},
		AppErrno: map[string]string{"A": "EHOSTUNREACH"},
		Act: func(r *run) error {
			absent := netip.AddrFrom4(r.hosts["B"].Addr4().As4())
			b := absent.As4()
			b[3] = 99
			absent = netip.AddrFrom4(b)
			r.step("A connects to %s: on A's link, but no host has that address", absent)
			if err := r.startApp("A", "--role=client", "--addr="+netip.AddrPortFrom(absent, port).String()); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "connect-timeout", Row: 13,
		Summary:  "A connects to B through a black hole: SYN retransmissions until tcp_syn_retries runs out",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.ConnectTimeout}},
		AppErrno: map[string]string{"A": "ETIMEDOUT"},
		Act: func(r *run) error {
			if _, err := r.blackhole("everything to and from B is dropped"); err != nil {
				return err
			}
			if err := r.startApp("A", client(r)...); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "connect-abandoned", Row: 13,
		Summary: "A connects to B through a black hole with its own connect timeout (2 s), as client libraries do: the application gives up long before tcp_syn_retries' budget",
		Expect:  map[string][]tracker.Verdict{"A": {tracker.ConnectAbandoned}},
		Sysctls: map[string]string{"net/ipv4/tcp_syn_retries": "6"},
		Act: func(r *run) error {
			if _, err := r.blackhole("everything to and from B is dropped"); err != nil {
				return err
			}
			if err := r.startApp("A", client(r, "--connect-timeout=2s")...); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "firewall-drops-own", Row: 15,
		Summary:     "A's own firewall (nft, OUTPUT) drops what A sends to B while A keeps sending: new data never leaves, the kernel probes the window instead of retransmitting, and gives up after tcp_retries2 probes",
		Expect:      map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.RetransmitTimeout}},
		AppErrno:    map[string]string{"A": "ETIMEDOUT"},
		ExpectWords: map[string][]string{"A": {"new data cannot leave this host", "all dropped here by netfilter (OUTPUT)"}},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms")); err != nil {
				return err
			}
			if _, err := r.hosts["A"].DropTo(r.peer()); err != nil {
				return err
			}
			r.step("A's firewall drops everything A sends to B (nft inet filter OUTPUT: drop)")
			return r.waitExpected()
		},
	},
	{
		Name: "peer-stops-reading", Row: 16,
		Summary:     "B's application stops reading while A writes 4 MB: B's receive window closes, B's kernel answers every window probe, and nothing will ever end the stall",
		Expect:      map[string][]tracker.Verdict{"A": {tracker.ZeroWindow}},
		Forbid:      map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.RetransmitTimeout}},
		ExpectWords: map[string][]string{"A": {"the peer's application stopped reading", "nothing will end it"}},
		Act: func(r *run) error {
			if err := r.connect(server(r, "--read=false"), client(r, "--send-on-connect=4000000")); err != nil {
				return err
			}
			r.step("B's server never reads; A's client writes 4 MB in one write(), which blocks once both buffers are full")
			return r.waitExpected()
		},
	},
	{
		Name: "peer-resumes-reading", Row: 16,
		Summary:     "B's application stops reading while A writes 4 MB, then reads again: the window opens, the probe timer stops, and the data flows",
		Expect:      map[string][]tracker.Verdict{"A": {tracker.ZeroWindow, tracker.Recovered}},
		Forbid:      map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.RetransmitTimeout}},
		ExpectWords: map[string][]string{"A": {"the waiting data left after"}},
		Act: func(r *run) error {
			if err := r.connect(server(r, "--read=false"), client(r, "--send-on-connect=4000000")); err != nil {
				return err
			}
			r.step("B's server does not read; A's client writes 4 MB in one write()")
			if err := r.waitVerdict("A", tracker.ZeroWindow); err != nil {
				return err
			}
			r.step("B's server starts reading")
			if err := r.tell("B", "read"); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "peer-stops-reading-user-timeout", Row: 16,
		Summary:     "B's application stops reading while A writes 4 MB, and A set TCP_USER_TIMEOUT=3s: the answered probes do not count, the user timeout (from the first probe) ends it",
		Expect:      map[string][]tracker.Verdict{"A": {tracker.ZeroWindow, tracker.RetransmitTimeout}},
		AppErrno:    map[string]string{"A": "ETIMEDOUT"},
		ExpectWords: map[string][]string{"A": {"TCP_USER_TIMEOUT=3s ends it", "the peer's window stayed closed"}},
		Act: func(r *run) error {
			if err := r.connect(server(r, "--read=false"), client(r, "--send-on-connect=4000000", "--user-timeout=3s")); err != nil {
				return err
			}
			r.step("B's server never reads; A's client (TCP_USER_TIMEOUT=3s) writes 4 MB in one write()")
			return r.waitExpected()
		},
	},
	{
		Name: "firewall-drops-replies", Row: 17,
		Summary:     "A's own firewall (nft, INPUT) drops what B sends: A's data leaves and B acknowledges it, but the ACKs die in A, which retransmits until it gives up",
		Expect:      map[string][]tracker.Verdict{"A": {tracker.Stalled, tracker.RetransmitTimeout}},
		AppErrno:    map[string]string{"A": "ETIMEDOUT"},
		ExpectWords: map[string][]string{"A": {"the peer is answering", "dropped here by netfilter (INPUT)"}},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms")); err != nil {
				return err
			}
			if _, err := r.hosts["A"].DropFrom(r.peer()); err != nil {
				return err
			}
			r.step("A's firewall drops everything B sends to A (nft inet filter INPUT: drop)")
			return r.waitExpected()
		},
	},
	{
		Name: "route-gone", Row: 19,
		Summary:     "A's route to B becomes unreachable while A sends: new data and probes are dropped by A's own routing (no route, IP_OUTNOROUTES), and the kernel gives up",
		Expect:      map[string][]tracker.Verdict{"A": {tracker.Stalled, oneOf(tracker.HostUnreachable, tracker.RetransmitTimeout)}},
		ExpectWords: map[string][]string{"A": {"dropped here by routing (IP_OUTNOROUTES"}},
		Act: func(r *run) error {
			if err := r.connect(server(r), client(r, "--send-every=200ms")); err != nil {
				return err
			}
			if _, err := r.hosts["A"].RouteUnreachable(r.peer()); err != nil {
				return err
			}
			r.step("A's route to B is now an unreachable route (ip route add unreachable B)")
			return r.waitExpected()
		},
	},
	{
		Name: "server-stops-accepting", Row: 18,
		Summary:     "B's server listens with a backlog of 2 and never calls accept() while A opens 8 connections: the accept queue fills and B's kernel turns the rest away",
		Expect:      map[string][]tracker.Verdict{"B": {tracker.AcceptQueueOverflow}},
		ExpectWords: map[string][]string{"B": {"the server stopped accepting", "backlog 2"}},
		Act: func(r *run) error {
			done, err := r.listenNoAccept("B", 2)
			if err != nil {
				return err
			}
			defer done()
			r.step("B's server listens on %s with a backlog of 2 and never calls accept()", r.serverAddr(port))
			closeAll, err := r.connectMany("A", 8)
			if err != nil {
				return err
			}
			defer closeAll()
			r.step("A opened 8 connections to it, 100 ms apart (non-blocking connect)")
			return r.waitExpected()
		},
	},
	{
		Name: "clients-vanish-after-syn", Row: 18,
		Summary:     "B listens while A's own firewall (nft INPUT) drops the TCP segments B sends and A opens 4 connections: B's SYN-ACKs die in A, no handshake completes, and B's kernel retransmits its SYN-ACKs to clients that never answer",
		Expect:      map[string][]tracker.Verdict{"B": {tracker.SynackUnanswered}},
		Forbid:      map[string][]tracker.Verdict{"B": {tracker.AcceptQueueOverflow}},
		ExpectWords: map[string][]string{"B": {"do not finish their handshake", "that never answered", "call the network team"}},
		Act:         unansweredHandshakes(64, 4),
	},
	{
		Name: "syn-flood-cookies", Row: 18,
		Summary:     "B listens with a backlog of 2 (tcp_syncookies=1) while A's firewall drops what B sends and A opens 8 connections: B's SYN queue fills with clients that never answer, and B's kernel answers the rest with SYN cookies",
		Expect:      map[string][]tracker.Verdict{"B": {tracker.SynackUnanswered}},
		Forbid:      map[string][]tracker.Verdict{"B": {tracker.AcceptQueueOverflow}},
		ExpectWords: map[string][]string{"B": {"a SYN flood", "SYN cookies in use", "tcp_syncookies=1", "network or security team"}},
		Act: func(r *run) error {
			if err := r.hosts["B"].Sysctl("net.ipv4.tcp_syncookies", "1"); err != nil {
				return err
			}
			r.step("B's tcp_syncookies=1: a full SYN queue is answered with cookies")
			return unansweredHandshakes(2, 8)(r)
		},
	},
	{
		Name: "server-accepts-in-bursts", Row: 18,
		Summary:     "B's server listens with a backlog of 1 and accepts whatever waits every 200 ms, while A connects 6 clients at once every 2.3 s: the application accepts, but each burst overflows the queue before it drains",
		Expect:      map[string][]tracker.Verdict{"B": {tracker.AcceptQueueOverflow}},
		ExpectWords: map[string][]string{"B": {"the backlog of", "is too small", "raise the listen() backlog"}},
		Act: func(r *run) error {
			done, err := r.acceptInBursts("B", 1, 200*time.Millisecond)
			if err != nil {
				return err
			}
			defer done()
			r.step("B's server listens on %s with a backlog of 1 and accepts every 200 ms", r.serverAddr(port))
			// Not a whole number of seconds apart: the listener is read
			// once a second, and some reading must fall after a drain.
			for burst := 0; burst < 6 && !r.expectedSeen(); burst++ {
				closeAll, err := r.connectBurst("A", 6)
				if err != nil {
					return err
				}
				defer closeAll()
				r.step("A connected 6 clients at once")
				if err := r.sleep(2300 * time.Millisecond); err != nil {
					return err
				}
			}
			return r.waitExpected()
		},
	},
	{
		Name: "timewait-reuse", Row: 14,
		Summary:      "A closes first (its side keeps the 4-tuple in TIME_WAIT), then connects again from the same port: tcp_tw_reuse lets the new connection take the 4-tuple over",
		ExpectNotice: map[string][]string{"A": {"time_wait_reuse"}},
		Forbid:       map[string][]tracker.Verdict{"A": finals},
		Sysctls:      map[string]string{"net/ipv4/tcp_tw_reuse": "1"},
		Act: func(r *run) error {
			if err := r.startApp("B", server(r, "--accept=2")...); err != nil {
				return err
			}
			if err := r.waitAppSaid("B", "listening"); err != nil {
				return err
			}
			r.step("A connects from port 40000, closes first (TIME_WAIT on A), and connects again from port 40000 after 1.5s")
			if err := r.startApp("A", client(r, "--local-port=40000", "--reconnect-after=1500ms")...); err != nil {
				return err
			}
			if err := r.waitAppSaid("A", "reconnected"); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "timewait-syn", Row: 14,
		Summary:      "B's server closes first (its side keeps the 4-tuple in TIME_WAIT); A connects again from the same port: B's TIME_WAIT accepts the newer SYN and the 4-tuple is reused",
		ExpectNotice: map[string][]string{"B": {"time_wait_syn_accepted"}},
		Forbid:       map[string][]tracker.Verdict{"A": finals, "B": finals},
		Act: func(r *run) error {
			if err := r.startApp("B", server(r, "--serve-close-after=200ms")...); err != nil {
				return err
			}
			if err := r.waitAppSaid("B", "listening"); err != nil {
				return err
			}
			r.step("A connects from port 40000; B closes first (TIME_WAIT on B); A connects again from port 40000 after 500ms")
			if err := r.startApp("A", client(r, "--local-port=40000", "--redial-after=500ms")...); err != nil {
				return err
			}
			if err := r.waitAppSaid("A", "reconnected"); err != nil {
				return err
			}
			return r.waitExpected()
		},
	},
	{
		Name: "timewait-syn-old", Row: 20,
		Summary: "B's server reads from A until the transfer is 32 MiB ahead of the clock that moves A's initial sequence numbers on, then closes first (TIME_WAIT on B); A connects again from the same port without timestamps: its new SYN's sequence number is behind what B's TIME_WAIT expects, B answers with the old ACK, A resets, the RST ends B's TIME_WAIT (tcp_rfc1337=0) and A's next SYN gets through",
		ExpectNotice: map[string][]string{"B": {tracker.NoticeTimeWaitSynRejected, tracker.NoticeTimeWaitRstEnded},
			"A": {tracker.NoticeSynAnsweredOldAck}},
		ExpectWords: map[string][]string{"B": {"behind the old connection's next", "answered with the old connection's ACK", "tcp_rfc1337=0"}},
		Forbid:      map[string][]tracker.Verdict{"B": finals},
		// A's RST ended B's TIME_WAIT: the connection A's next SYN opens
		// took no TIME_WAIT over, whatever the kernel lets tcpwatch see.
		ForbidNotice:          map[string][]string{"B": {"time_wait_syn_accepted"}},
		Sysctls:               map[string]string{"net/ipv4/tcp_timestamps": "0"},
		ToldFromTimeWaitDrops: []string{"B"},
		Act:                   oldSyn("A's RST to the old ACK ends B's TIME_WAIT; its retransmitted SYN reaches B's listener", true),
	},
	{
		Name: "timewait-rst-rfc1337", Row: 21,
		Summary: "the same with tcp_rfc1337=1 on B: B's TIME_WAIT ignores A's RST and answers each of A's SYNs with the old ACK until its 60 s are over",
		ExpectNotice: map[string][]string{"B": {tracker.NoticeTimeWaitSynRejected, tracker.NoticeTimeWaitRstIgnored},
			"A": {tracker.NoticeSynAnsweredOldAck}},
		ExpectWords:           map[string][]string{"B": {"tcp_rfc1337=1 keeps it"}},
		Forbid:                map[string][]tracker.Verdict{"B": finals},
		ForbidNotice:          map[string][]string{"B": {"time_wait_syn_accepted"}},
		Sysctls:               map[string]string{"net/ipv4/tcp_timestamps": "0"},
		SysctlsB:              map[string]string{"net/ipv4/tcp_rfc1337": "1"},
		ToldFromTimeWaitDrops: []string{"B"},
		Act:                   oldSyn("B's TIME_WAIT ignores A's RST (tcp_rfc1337=1): A's SYNs meet the old ACK until the TIME_WAIT ends", false),
	},
	{
		Name: "close-wait-stuck", Row: 15,
		Summary:  "A's client closes; B's server never reads the end of file and never closes: its socket stays in CLOSE_WAIT until the process exits",
		Expect:   map[string][]tracker.Verdict{"B": {tracker.CloseWaitStuck, tracker.CloseWaitStuck}},
		AppErrno: map[string]string{},
		Act: func(r *run) error {
			if err := r.connect(server(r, "--read=false"), client(r, "--close-after=200ms")); err != nil {
				return err
			}
			if err := r.waitAppSaid("A", "closed"); err != nil {
				return err
			}
			r.step("A closed; B's socket is in CLOSE_WAIT and B's server does not close it (tcpwatch tells it after %s here, a minute by default)", r.opt.CloseWaitAfter)
			// The process is killed once tcpwatch has told it stuck, not
			// after a fixed sleep: the socket scan that finds it runs every
			// half threshold, and under an emulator (the kernel matrix's
			// guests) a scan can come later than the threshold plus a second.
			if err := r.waitVerdict("B", tracker.CloseWaitStuck); err != nil {
				return err
			}
			return r.then(r.killServer("the process exits: its kernel closes what it held"))
		},
	},
	{
		Name: "local-ports-exhausted", Row: 14,
		Summary:  "A's client opens and closes connections to B faster than TIME_WAIT frees its ports (ip_local_port_range of 4 ports): connect() fails with EADDRNOTAVAIL",
		Expect:   map[string][]tracker.Verdict{"A": {tracker.LocalPortsExhausted}},
		AppErrno: map[string]string{"A": "EADDRNOTAVAIL"},
		Sysctls:  map[string]string{"net/ipv4/ip_local_port_range": "40000 40003", "net/ipv4/tcp_tw_reuse": "0"},
		Act: func(r *run) error {
			if err := r.startApp("B", server(r, "--accept=8")...); err != nil {
				return err
			}
			if err := r.waitAppSaid("B", "listening"); err != nil {
				return err
			}
			if err := r.startApp("A", client(r, "--churn=8")...); err != nil {
				return err
			}
			r.step("A's client opens and closes connections to %s: each closed by A leaves a 4-tuple, and its port, in TIME_WAIT for 60s", r.serverAddr(port))
			return r.waitExpected()
		},
	},
})

// oldSynAhead is how far ahead of A's ISN clock B lets the transfer get
// before it closes first: B's TIME_WAIT then expects a sequence number
// past A's first one by what A sent, while A's next ISN for the same
// 4-tuple (secure_tcp_seq: a hash of the 4-tuple plus the clock in 64 ns
// steps, 15.6 MB a second) has moved on only by the time since A's first
// connect. 32 MiB is two seconds of that clock: the time between B's
// decision and A's new SYN (A sees the FIN, closes, waits 10 ms, connects)
// under an emulator too. How long the transfer takes depends on how much
// faster than the clock it runs, not on a fixed size.
const oldSynAhead = 32 << 20

// oldSyn makes B's TIME_WAIT meet a SYN that is not newer (article 004,
// 3.11): A writes until B, ahead of the ISN clock, closes first, and A
// comes back from the same port at once. waitReconnect: A's connect()
// must succeed too.
func oldSyn(then string, waitReconnect bool) func(r *run) error {
	return func(r *run) error {
		if !r.seesTimeWait {
			r.step("this kernel's kfree_skb names no receiving socket (rx_sk, 6.11+): B's TIME_WAIT notices cannot be told (tcpwatch check says so); the kernel's shape still runs, the lab waits for A's side only")
		}
		if err := r.startApp("B", server(r, fmt.Sprintf("--serve-ahead-of-isn=%d", oldSynAhead))...); err != nil {
			return err
		}
		if err := r.waitAppSaid("B", "listening"); err != nil {
			return err
		}
		r.step("A connects from port 40000 and writes; B reads until the transfer is %d MiB ahead of the clock in A's initial sequence numbers, then closes first (TIME_WAIT on B); A closes on B's FIN and connects again from port 40000 after 10 ms, without TCP timestamps (tcp_timestamps=0 in A)", oldSynAhead>>20)
		if err := r.startApp("A", client(r, "--local-port=40000", "--send-until-fin", "--redial-after=10ms")...); err != nil {
			return err
		}
		var said string
		if err := r.waitFor("B's server to outrun the ISN clock", func() bool {
			for _, w := range r.appWhat["B"] {
				if strings.HasPrefix(w, "ahead:") || strings.HasPrefix(w, "too slow:") {
					said = w
					return true
				}
			}
			return false
		}); err != nil {
			return err
		}
		if strings.HasPrefix(said, "too slow:") {
			return fmt.Errorf("B's server %s: no SYN that is not newer can be made here", said)
		}
		r.step("%s", then)
		if waitReconnect {
			if err := r.waitAppSaid("A", "reconnected"); err != nil {
				return err
			}
		}
		return r.waitExpected()
	}
}

// oneOf expects any of several verdicts: where the kernel's choice depends
// on a race (did neighbour discovery fail before the budget ran out?).
func oneOf(vs ...tracker.Verdict) tracker.Verdict {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = string(v)
	}
	return tracker.Verdict(strings.Join(parts, "|"))
}

// matches says whether got satisfies an expected verdict (or alternatives).
func matches(want tracker.Verdict, got string) bool {
	for _, alt := range strings.Split(string(want), "|") {
		if alt == got {
			return true
		}
	}
	return false
}

// withIPv6 adds IPv6 twins of the cable, reboot and keepalive scenarios.
func withIPv6(list []*Scenario) []*Scenario {
	out := list
	for _, sc := range list {
		switch sc.Name {
		case "cable-pull", "cable-replug", "host-reboot", "keepalive-dead", "keepalive-reboot",
			"route-gone", "firewall-drops-own", "peer-stops-reading", "firewall-drops-replies", "server-stops-accepting",
			"clients-vanish-after-syn", "syn-flood-cookies", "timewait-syn-old", "timewait-rst-rfc1337":
			v6 := *sc
			v6.Name += "-v6"
			v6.IPv6 = true
			v6.Summary += " (IPv6)"
			if sc.Name == "route-gone" {
				// IPv6's failed route lookup (inet6_csk_xmit) frees the
				// segment with no reason (NOT_SPECIFIED) up to 7.3.x: its
				// place says it; 7.3.4 gives IP_OUTNOROUTES, as IPv4 does.
				v6.Summary = strings.Replace(sc.Summary, "(no route, IP_OUTNOROUTES)", "(no route: inet6_csk_xmit's failed lookup, NOT_SPECIFIED)", 1) + " (IPv6)"
				v6.ExpectWords = map[string][]string{"A": {"dropped here by routing (no route: inet6_csk_xmit's route lookup failed|dropped here by routing (IP_OUTNOROUTES: no route)"}}
			}
			out = append(out, &v6)
		}
	}
	return out
}

// Find returns the named scenario, or nil.
func Find(name string) *Scenario {
	for _, sc := range Scenarios {
		if sc.Name == name {
			return sc
		}
	}
	return nil
}

func server(r *run, extra ...string) []string {
	return append([]string{"--role=server", "--addr=" + r.serverAddr(port)}, extra...)
}

func client(r *run, extra ...string) []string {
	return append([]string{"--role=client", "--addr=" + r.serverAddr(port)}, extra...)
}

func keepalive(r *run) string {
	return fmt.Sprintf("--keepalive=%d,%d,%d", int(r.opt.KeepaliveTime/time.Second),
		int(r.opt.KeepaliveIntvl/time.Second), r.opt.KeepaliveProbe)
}

// connect starts B's server, then A's client, and waits until they are
// connected.
func (r *run) connect(serverArgs, clientArgs []string) error {
	if err := r.startApp("B", serverArgs...); err != nil {
		return err
	}
	if err := r.waitAppSaid("B", "listening"); err != nil {
		return err
	}
	if err := r.startApp("A", clientArgs...); err != nil {
		return err
	}
	if err := r.waitAppSaid("A", "connected"); err != nil {
		return err
	}
	if err := r.waitAppSaid("B", "accepted"); err != nil {
		return err
	}
	r.step("A's client is connected to B's server %s", r.serverAddr(port))
	return r.sleep(300 * time.Millisecond)
}

// then waits for the expected verdicts after err-free setup.
func (r *run) then(err error) error {
	if err != nil {
		return err
	}
	return r.waitExpected()
}

// waitDrained waits until nothing A wrote to the lab's connection is
// unacknowledged in A or unread in B (the queues of /proc/net/tcp and
// tcp6 in each host's namespace).
func (r *run) waitDrained(what string) error {
	return r.waitFor(what, func() bool {
		aSend, _, aOK := r.queues("A")
		_, bRecv, bOK := r.queues("B")
		return aOK && bOK && aSend == 0 && bRecv == 0
	})
}

// queues sums the send and receive queues of host's established
// connections to or from the lab's port; ok is false when there is none
// or the tables cannot be read.
func (r *run) queues(host string) (send, recv int, ok bool) {
	h := r.hosts[host]
	if h == nil {
		return 0, 0, false
	}
	portHex := fmt.Sprintf(":%04X", port)
	err := h.Do(func() error {
		for _, table := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			b, err := os.ReadFile(table)
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(b), "\n")[1:] {
				// sl local rem st tx_queue:rx_queue ...
				f := strings.Fields(line)
				if len(f) < 5 || f[3] != "01" || !(strings.HasSuffix(f[1], portHex) || strings.HasSuffix(f[2], portHex)) {
					continue
				}
				tx, rx, _ := strings.Cut(f[4], ":")
				t, err1 := strconv.ParseUint(tx, 16, 32)
				x, err2 := strconv.ParseUint(rx, 16, 32)
				if err1 != nil || err2 != nil {
					return fmt.Errorf("%s: %q", table, f[4])
				}
				send, recv, ok = send+int(t), recv+int(x), true
			}
		}
		return nil
	})
	return send, recv, ok && err == nil
}

func (r *run) killServer(why string) error {
	r.step("killed B's server with SIGKILL: %s", why)
	return r.kill("B", syscall.SIGKILL)
}

func (r *run) pull() error {
	if r.cable == nil {
		return fmt.Errorf("this scenario has no cable")
	}
	if err := r.cable.Pull(); err != nil {
		return err
	}
	r.step("pulled the cable between A and B (both lose carrier; nothing gets through)")
	return nil
}

func (r *run) plug() error {
	if err := r.cable.Plug(); err != nil {
		return err
	}
	r.step("plugged the cable back in")
	return nil
}

// listenNoAccept makes host listen on the server address with the given
// backlog, in the lab's own process, and never accept: a server whose
// application stopped calling accept().
func (r *run) listenNoAccept(host string, backlog int) (done func(), err error) {
	fd, err := r.listenFD(host, backlog)
	if err != nil {
		return nil, err
	}
	return func() { unix.Close(fd) }, nil
}

// listenFD is the listening socket of listenNoAccept.
func (r *run) listenFD(host string, backlog int) (fd int, err error) {
	addr := netip.MustParseAddrPort(r.serverAddr(port))
	err = r.hosts[host].Do(func() error {
		var err error
		fd, err = unix.Socket(sockFamily(addr.Addr()), unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, sockaddr(addr)); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Listen(fd, backlog); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return -1, fmt.Errorf("listen on %s in %s: %w", addr, host, err)
	}
	return fd, nil
}

// unansweredHandshakes is B listening with backlog, never accepting, while
// A's firewall drops the TCP segments B sends (its SYN-ACKs) and A opens
// clients connections: no handshake completes.
func unansweredHandshakes(backlog, clients int) func(r *run) error {
	return func(r *run) error {
		done, err := r.listenNoAccept("B", backlog)
		if err != nil {
			return err
		}
		defer done()
		r.step("B's server listens on %s with a backlog of %d", r.serverAddr(port), backlog)
		if _, err := r.hosts["A"].DropTCPFrom(r.peer()); err != nil {
			return err
		}
		r.step("A's firewall drops the TCP segments B sends to A (nft inet filter INPUT: drop)")
		closeAll, err := r.connectMany("A", clients)
		if err != nil {
			return err
		}
		defer closeAll()
		r.step("A opened %d connections to it, 100 ms apart (non-blocking connect)", clients)
		return r.waitExpected()
	}
}

// acceptInBursts makes host listen on the server address with the given
// backlog, in the lab's own process, and accept whatever waits every
// interval: an application that does accept, more slowly than its
// clients come in bursts. done closes the listener and what it accepted.
func (r *run) acceptInBursts(host string, backlog int, every time.Duration) (done func(), err error) {
	fd, err := r.listenFD(host, backlog)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	var accepted []int
	go func() {
		defer close(finished)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			for {
				nfd, _, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
				if err != nil {
					break
				}
				accepted = append(accepted, nfd)
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
		for _, c := range accepted {
			unix.Close(c)
		}
		unix.Close(fd)
	}, nil
}

// connectBurst starts n non-blocking connects from host to the server
// address at once; closeAll closes them.
func (r *run) connectBurst(host string, n int) (closeAll func(), err error) {
	return r.connectSpaced(host, n, 0)
}

// connectMany starts n non-blocking connects from host to the server
// address, 100 ms apart; closeAll closes them.
func (r *run) connectMany(host string, n int) (closeAll func(), err error) {
	return r.connectSpaced(host, n, 100*time.Millisecond)
}

// connectSpaced starts n non-blocking connects from host to the server
// address, gap apart (0: all in one trip into the namespace).
func (r *run) connectSpaced(host string, n int, gap time.Duration) (closeAll func(), err error) {
	addr := netip.MustParseAddrPort(r.serverAddr(port))
	var fds []int
	closeAll = func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	connect := func(count int) error {
		return r.hosts[host].Do(func() error {
			for range count {
				fd, err := unix.Socket(sockFamily(addr.Addr()), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				fds = append(fds, fd)
				if err := unix.Connect(fd, sockaddr(addr)); err != nil && err != unix.EINPROGRESS {
					return err
				}
			}
			return nil
		})
	}
	for started := 0; started < n; {
		count := 1
		if gap == 0 {
			count = n
		}
		if err := connect(count); err != nil {
			closeAll()
			return nil, fmt.Errorf("connect from %s: %w", host, err)
		}
		started += count
		if gap > 0 && started < n {
			if err := r.sleep(gap); err != nil {
				closeAll()
				return nil, err
			}
		}
	}
	return closeAll, nil
}

func sockFamily(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// peer is B's address in the scenario's family.
func (r *run) peer() netip.Addr {
	if r.sc.IPv6 {
		return r.hosts["B"].Addr6()
	}
	return r.hosts["B"].Addr4()
}

func (r *run) blackhole(why string) (func() error, error) {
	undo, err := r.hosts["A"].Blackhole(r.peer())
	if err != nil {
		return nil, err
	}
	r.step("black hole between A and B: %s", why)
	return undo, nil
}

// reboot crashes B without letting anything out (a crash sends no FIN),
// reboots it, and reconnects it.
func (r *run) reboot() error {
	undo, err := r.blackhole("B crashes: nothing leaves it any more (the lab kills its processes; their FIN dies in the black hole, as in a real crash)")
	if err != nil {
		return err
	}
	if err := r.hosts["B"].Reboot(); err != nil {
		return err
	}
	r.refreshNetns()
	r.step("B rebooted: same addresses, no sockets")
	if err := r.sleep(500 * time.Millisecond); err != nil {
		return err
	}
	if err := undo(); err != nil {
		return err
	}
	r.step("B is reachable again")
	return nil
}

// reportExposure says, from the settings each socket holds (read by the
// socket iterator of tcpwatch exposure), when the kernel of host would
// notice that the peers of its connections vanished: "nothing will ever
// end it" only when that is true.
func (r *run) reportExposure(host string) error {
	r.mu.Lock()
	var inode uint32
	for ino, h := range r.netnsHost {
		if h == host {
			inode = ino
		}
	}
	r.mu.Unlock()
	reader, err := tracer.OpenSocketReader(true)
	if err != nil {
		return err
	}
	defer reader.Close()
	socks, err := reader.Read(inode)
	if err != nil {
		return err
	}
	for _, c := range exposure.Build(socks).Connections {
		if c.State != tcp.StateEstablished {
			continue
		}
		r.step("%s still has %s -> %s ESTABLISHED, idle %s, %d bytes unacknowledged: %s",
			host, c.Local, c.Remote, words.Secs(c.Idle), c.Unacked, exposureVerdict(c))
	}
	return nil
}

// exposureVerdict is the lab's sentence for one connection: whether
// anything will ever end it, and why.
func exposureVerdict(c *exposure.Connection) string {
	if c.Assessment.Idle.Never {
		return "no keepalive: nothing will ever end it while it stays idle (SO_KEEPALIVE is off on the socket); " + words.SendingWhy(c)
	}
	return "its kernel will notice after " + words.Long(c.Assessment.Idle.After) + " (" + words.IdleWhy(c) + ")"
}
