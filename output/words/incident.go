package words

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/incident"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// Peer prints an incident's peer: the address, and the port when all its
// connections share one.
func Peer(inc *incident.Incident) string {
	if inc.Port != 0 {
		return netip.AddrPortFrom(inc.Peer, inc.Port).String()
	}
	return inc.Peer.String()
}

// Clock prints a time of day as the text output does.
func Clock(t time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return t.Format("15:04:05")
}

// Owners names up to three processes: "python3 (pid 1622)", "python3
// (pid 1622, 1990 connections), java (pid 7, 10 connections)", "..., 4
// more processes".
func Owners(owners []incident.Owner, total int) string {
	if len(owners) == 0 {
		return "unknown processes"
	}
	var parts []string
	for i, o := range owners {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("%d more process%s", len(owners)-3, pluralES(len(owners)-3)))
			break
		}
		who := fmt.Sprintf("%s (pid %d", orUnknown(o.Comm), o.PID)
		if o.PID == 0 {
			who = "unknown processes ("
		}
		if len(owners) > 1 || o.Connections != total {
			if o.PID != 0 {
				who += ", "
			}
			who += fmt.Sprintf("%d connection%s", o.Connections, plural(o.Connections))
		}
		who += ")"
		parts = append(parts, who)
	}
	return strings.Join(parts, ", ")
}

func pluralES(n int) string {
	if n == 1 {
		return ""
	}
	return "es"
}

// VerdictMix prints the verdict counts, most first: "1990 retransmit_timeout, 10 recovered".
func VerdictMix(v map[tracker.Verdict]int) string {
	type kv struct {
		v tracker.Verdict
		n int
	}
	var all []kv
	for k, n := range v {
		all = append(all, kv{k, n})
	}
	slices.SortFunc(all, func(a, b kv) int {
		if a.n != b.n {
			return b.n - a.n
		}
		return cmp.Compare(a.v, b.v)
	})
	parts := make([]string, len(all))
	for i, e := range all {
		parts[i] = fmt.Sprintf("%d %s", e.n, e.v)
	}
	return strings.Join(parts, ", ")
}

// ErrnoMix prints the errors the applications saw: "ETIMEDOUT ×2000".
func ErrnoMix(e map[int32]int) string {
	keys := make([]int32, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b int32) int { return e[b] - e[a] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", tcp.ErrnoName(k), e[k])
	}
	return strings.Join(parts, ", ")
}

// silent says whether the incident is the peer's silence (connections
// stalled or probing unanswered), rather than resets or refusals.
func silent(inc *incident.Incident) bool {
	for v := range inc.Verdicts {
		switch v {
		case tracker.Stalled, tracker.KeepaliveProbing, tracker.RetransmitTimeout, tracker.KeepaliveTimeout,
			tracker.HostUnreachable, tracker.ConnectTimeout, tracker.Recovered:
		default:
			return false
		}
	}
	return true
}

// IncidentSummary is the incident in one sentence, for the person on call.
func IncidentSummary(inc *incident.Incident) string {
	var b strings.Builder
	peer := Peer(inc)
	owners := Owners(inc.Owners, inc.Connections)
	switch {
	case inc.Phase == incident.Close && inc.Outcome == incident.Recovered:
		fmt.Fprintf(&b, "peer %s answered again: all %d connections of %s recovered, %s after the trouble began at %s",
			peer, inc.Connections, owners, Secs(inc.Outage), Clock(inc.Onset))
	case inc.Phase == incident.Close && inc.Outcome == incident.Fatal:
		fmt.Fprintf(&b, "all %d connections of %s to %s died (%s), the last at %s, %s after the trouble began at %s",
			inc.Connections, owners, peer, ErrnoMix(inc.Errnos), Clock(inc.LastFailure), Secs(inc.Outage), Clock(inc.Onset))
	case inc.Phase == incident.Close && inc.Outcome == incident.Mixed:
		fmt.Fprintf(&b, "the trouble with %s is over after %s: of %d connections of %s, %d recovered and %d died (%s)",
			peer, Secs(inc.Outage), inc.Connections, owners, inc.Recovered, inc.Failed, ErrnoMix(inc.Errnos))
	case inc.Phase == incident.Close:
		fmt.Fprintf(&b, "tcpwatch stops with %d of %d connections of %s to %s still in trouble since %s (%s)",
			inc.InTrouble, inc.Connections, owners, peer, Clock(inc.Onset), VerdictMix(inc.Verdicts))
	case silent(inc):
		fmt.Fprintf(&b, "peer %s silent since %s: %d connection%s of %s in trouble (%s)",
			peer, Clock(inc.Onset), inc.Connections, plural(inc.Connections), owners, VerdictMix(inc.Verdicts))
		if inc.InTrouble > 0 && inc.Retransmits > 0 {
			fmt.Fprintf(&b, ", %d retransmissions", inc.Retransmits)
			if inc.FailedSends == 0 {
				b.WriteString(", packets leave this host")
			} else {
				fmt.Fprintf(&b, ", %d of them never left this host", inc.FailedSends)
			}
		}
		if inc.Probes > 0 {
			fmt.Fprintf(&b, ", %d keepalive probes unanswered", inc.Probes)
		}
		if !inc.GiveUpFirst.IsZero() {
			fmt.Fprintf(&b, "; the first gives up at %s", Clock(inc.GiveUpFirst))
			if inc.GiveUpLast.Sub(inc.GiveUpFirst) >= time.Second {
				fmt.Fprintf(&b, ", the last at %s", Clock(inc.GiveUpLast))
			}
		}
		if inc.Failed > 0 {
			fmt.Fprintf(&b, "; %d already died (%s)", inc.Failed, ErrnoMix(inc.Errnos))
		}
	default:
		fmt.Fprintf(&b, "%d connection%s of %s to %s in trouble since %s: %s",
			inc.Connections, plural(inc.Connections), owners, peer, Clock(inc.Onset), VerdictMix(inc.Verdicts))
		if len(inc.Errnos) > 0 {
			fmt.Fprintf(&b, " (%s)", ErrnoMix(inc.Errnos))
		}
	}
	if sf := inc.SharedFate; sf != nil && sf.Idle > 0 {
		fmt.Fprintf(&b, "; %s", SharedFateText(sf))
	}
	return b.String()
}

// SharedFateText says what the peer's trouble means for its idle connections.
func SharedFateText(sf *incident.SharedFate) string {
	s := fmt.Sprintf("%d idle connection%s to it (%s) cannot notice", sf.Idle, plural(sf.Idle), Owners(sf.Owners, sf.Idle))
	switch {
	case sf.Keepalive == 0:
		s += ": no keepalive, their kernels never give up until they send"
	case sf.Never == 0:
		s += fmt.Sprintf(": keepalive gives up at %s at the earliest", Clock(sf.NoticeFirst))
	default:
		s += fmt.Sprintf(": %d with keepalive give up at %s at the earliest, %d without never do until they send",
			sf.Keepalive, Clock(sf.NoticeFirst), sf.Never)
	}
	return s
}
