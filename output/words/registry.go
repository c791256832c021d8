package words

import (
	"fmt"
	"slices"

	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// The verdict registry: one entry per verdict, in one file per family
// (closes.go, resets.go, outages.go, keepalive.go, connect.go, lost.go,
// closewait.go, ports.go, drops.go, listeners.go),
// each with what tcpwatch says about it beyond the tracker's facts. The
// output's colours, the metrics, the lab's scenarios and the tests read it;
// adding a verdict is a tracker constant and the facts that decide it,
// plus one entry here.

// Severity is how bad a verdict is for the person reading it: it decides
// the text output's colour.
type Severity int

const (
	Normal  Severity = iota // a normal end, or an outage survived (green)
	Warning                 // an episode in progress: the connection may still die (yellow)
	Failure                 // the connection failed or ended abnormally (red)
)

func (s Severity) String() string {
	switch s {
	case Normal:
		return "normal"
	case Warning:
		return "warning"
	}
	return "failure"
}

// Family groups verdicts by what ends or troubles the connection (and by
// the file that words them).
type Family string

const (
	Closes    Family = "closes"    // a side closed or aborted it
	Resets    Family = "resets"    // the peer reset it
	Outages   Family = "outages"   // the peer stopped acknowledging
	Keepalive Family = "keepalive" // an idle peer stopped answering probes
	Connect   Family = "connect"   // it never got past the handshake
	Lost      Family = "lost"      // its end was among the records the kernel lost
	Leaks     Family = "leaks"     // its process keeps what its peer ended (close_wait_stuck)
	Window    Family = "window"    // new data waits with nothing in flight: the peer's window is closed
	Listeners Family = "listeners" // a local listener turns clients away
)

// Entry is one verdict in the registry.
type Entry struct {
	Verdict tracker.Verdict
	Family  Family
	// Episode: the connection lives on (the tracker's Verdict.Episode
	// agrees, which a test checks); otherwise the verdict is final.
	Episode  bool
	Severity Severity
	// Errno is the error the verdict implies for the application when
	// the narrative cites none: the one it sees, or for an episode the one
	// it will see if the kernel gives up (0: none).
	Errno int32
	// WriteErr: the kernel ends the connection through tcp_write_err(),
	// which reports the soft error it holds (an ICMP unreachable) instead
	// of ETIMEDOUT when there is one.
	WriteErr bool
	// Summary says the narrative in one sentence; Explain teaches what the
	// kernel did and which of its figures decided it.
	Summary func(*tracker.Narrative) string
	Explain func(*tracker.Narrative) string
}

// Registry is every verdict tcpwatch can give, by family.
var Registry = slices.Concat(closes, resets, outages, keepaliveVerdicts, connects, lost, windowVerdicts, listenerVerdicts, leaks, portVerdicts)

var byVerdict map[tracker.Verdict]*Entry

// init indexes the registry (in init, not in byVerdict's initializer:
// the entries' words look verdicts up, which would make a cycle).
func init() {
	byVerdict = make(map[tracker.Verdict]*Entry, len(Registry))
	for i := range Registry {
		byVerdict[Registry[i].Verdict] = &Registry[i]
	}
}

// Lookup returns v's entry, or nil if v is not registered.
func Lookup(v tracker.Verdict) *Entry { return byVerdict[v] }

// SeverityOf is v's severity; an unregistered verdict is a failure.
func SeverityOf(v tracker.Verdict) Severity {
	if e := Lookup(v); e != nil {
		return e.Severity
	}
	return Failure
}

// Verdicts lists the registered verdicts for which keep says yes (nil:
// all of them).
func Verdicts(keep func(*Entry) bool) []tracker.Verdict {
	var out []tracker.Verdict
	for i := range Registry {
		if keep == nil || keep(&Registry[i]) {
			out = append(out, Registry[i].Verdict)
		}
	}
	return out
}

// ImpliedErrno is the error n's application sees, or will see if the
// kernel gives up: the one the narrative cites; else, for a verdict the
// kernel ends through tcp_write_err(), the soft error it holds when that
// is an unreachable; else the verdict's own.
func ImpliedErrno(n *tracker.Narrative) int32 {
	if n.Errno != 0 {
		return n.Errno
	}
	e := Lookup(n.Verdict)
	if e == nil {
		return 0
	}
	if e.WriteErr && tcp.Unreachable(n.SkErrSoft) {
		return n.SkErrSoft
	}
	return e.Errno
}

// Summary is the narrative in one sentence.
func Summary(n *tracker.Narrative) string {
	if e := Lookup(n.Verdict); e != nil {
		return e.Summary(n)
	}
	return string(n.Verdict)
}

// Explanation teaches what the kernel did and why, with its figures.
func Explanation(n *tracker.Narrative) string {
	e := Lookup(n.Verdict)
	if e == nil {
		return fmt.Sprintf("tcpwatch has no words for the verdict %q.", n.Verdict)
	}
	why := e.Explain(n)
	if n.EndUnseen {
		why += fmt.Sprintf(" No record of this end reached tcpwatch (no CLOSE, error report or timer record; the kernel counted %s): the episode's deadline passed, and the kernel's socket table no longer had the connection, or its owner closed it with no word of why. So the verdict is the one the kernel reaches at that deadline, not one read from the end.", lostCounted(n))
	}
	if n.LostRecords {
		why += " Some kernel records were lost or skipped while tcpwatch tracked this connection (see stats.lost and stats.skipped): its timeline may have gaps."
	}
	if n.Unjoined {
		why += " The kernel's table of connections in trouble was full while tcpwatch tracked this one (stats.skipped.troubled_full): its dropped packets may not have been joined to it, so none is claimed."
	}
	return why
}

// lostCounted says whether the kernel counted records lost or skipped
// while n's connection was tracked.
func lostCounted(n *tracker.Narrative) string {
	if n.LostRecords {
		return "records lost or skipped meanwhile"
	}
	return "none lost"
}
