package words

import (
	"fmt"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/exposure"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// ExposureWhy is the sentence that explains when the kernel of a
// connection would notice its peer vanishing: while idle, then while
// sending, each with the settings that decide it and where they came from.
func ExposureWhy(c *exposure.Connection) string {
	return IdleWhy(c) + "; " + SendingWhy(c)
}

// IdleWhy explains the idle half of an assessment.
func IdleWhy(c *exposure.Connection) string {
	st := &c.Settings
	a := c.Assessment
	switch a.Idle.By {
	case exposure.ByNothing:
		return "no keepalive (SO_KEEPALIVE off): while it is idle, nothing will ever end it if the peer vanishes"
	case exposure.ByFinTimeout:
		return fmt.Sprintf("orphaned in FIN_WAIT2 (its process closed it): the kernel resets it after %s=%s",
			finName(st), Long(a.Idle.After))
	case exposure.ByLinger2Reset:
		return "orphaned in FIN_WAIT2 with TCP_LINGER2 < 0: the kernel resets it at once"
	case exposure.ByOrphanRetries, exposure.ByUserTimeout, exposure.ByRetries2:
		return "orphaned with its FIN unacknowledged: it is always sending"
	}
	// Keepalive.
	if st.UserTimeout > 0 {
		return fmt.Sprintf("keepalive after %s idle (%s), probes every %s (%s) until TCP_USER_TIMEOUT=%s has passed with a probe out (the count %d no longer decides): %s while idle",
			Secs(st.KeepaliveIdle), st.KeepaliveIdleFrom, Secs(st.KeepaliveIntvl), st.KeepaliveIntvlFrom,
			Secs(st.UserTimeout), st.KeepaliveCount, Long(a.Idle.After))
	}
	return fmt.Sprintf("keepalive after %s idle (%s), then %d probes (%s) %s apart (%s): %s + %d × %s = %s while idle",
		Secs(st.KeepaliveIdle), st.KeepaliveIdleFrom, st.KeepaliveCount, st.KeepaliveCountFrom,
		Secs(st.KeepaliveIntvl), st.KeepaliveIntvlFrom,
		Secs(st.KeepaliveIdle), st.KeepaliveCount, Secs(st.KeepaliveIntvl), Long(a.Idle.After))
}

// SendingWhy explains the sending half: the retransmission budget or the
// user timeout, counted from the first retransmission.
func SendingWhy(c *exposure.Connection) string {
	st := &c.Settings
	s := c.Assessment.Sending
	prefix := "data sent and unanswered ends it "
	if c.Assessment.SendingNow {
		prefix = fmt.Sprintf("%d bytes are unacknowledged now: ", c.Unacked)
	}
	switch s.By {
	case exposure.ByUserTimeout:
		return prefix + fmt.Sprintf("%s after the first retransmission (TCP_USER_TIMEOUT, set on the socket)", Long(s.After))
	case exposure.ByOrphanRetries:
		v := fmt.Sprint(st.OrphanRetries)
		n := st.OrphanRetries
		if n == 0 && c.RTO < st.RTOMax {
			v, n = "0 (taken as 8)", 8
		}
		return prefix + fmt.Sprintf("%s after the first retransmission (tcp_orphan_retries=%s: %s)", Long(s.After), v, formula(n, tcp.RTOMin, st.RTOMax))
	}
	return prefix + fmt.Sprintf("%s after the first retransmission (tcp_retries2=%d: %s%s)",
		Long(s.After), st.Retries2, formula(st.Retries2, tcp.RTOMin, st.RTOMax), rtoMaxNote(st))
}

func rtoMaxNote(st *exposure.Settings) string {
	if st.RTOMaxFrom == exposure.FromKernel || st.RTOMax == tcp.RTOMaxDefault {
		return ""
	}
	return fmt.Sprintf(", RTO capped at %s by the %s", Secs(st.RTOMax), st.RTOMaxFrom)
}

func finName(st *exposure.Settings) string {
	if st.FinTimeoutFrom == exposure.FromSocket {
		return "TCP_LINGER2"
	}
	return "tcp_fin_timeout"
}

// Long prints a duration as Secs does, and spelled out in hours and
// minutes when it is that long: 7875s (2h11m15s).
func Long(d time.Duration) string {
	if d < time.Minute {
		return Secs(d)
	}
	h := d.String()
	if strings.HasSuffix(h, "m0s") {
		h = strings.TrimSuffix(h, "0s")
	}
	if strings.HasSuffix(h, "h0m") {
		h = strings.TrimSuffix(h, "0m")
	}
	return Secs(d) + " (" + h + ")"
}
