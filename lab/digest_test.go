package lab

import (
	"fmt"
	"strings"
	"time"

	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// digest condenses a failed run's recording to one line per connection,
// its records in order, so that the part of a long test log a reader (or
// CI) shows first says which records came: a missing verdict is then a
// record that never arrived or a record the tracker misread. The full
// recording follows it for a replay.
func digest(recording string) []string {
	evs, err := wire.ReadRecording(strings.NewReader(recording), time.Unix(0, 0))
	if err != nil {
		return []string{fmt.Sprintf("recording unreadable: %v", err)}
	}
	if len(evs) == 0 {
		return []string{"no records"}
	}
	t0 := evs[0].Mono
	var order []uint64
	lines := map[uint64]*strings.Builder{}
	for i := range evs {
		ev := &evs[i]
		b := lines[ev.Cookie]
		if b == nil {
			b = &strings.Builder{}
			fmt.Fprintf(b, "cookie %d netns %d %v>%v:", ev.Cookie, ev.NetNS, ev.Local, ev.Remote)
			lines[ev.Cookie] = b
			order = append(order, ev.Cookie)
		}
		fmt.Fprintf(b, " +%.3f %s", (ev.Mono - t0).Seconds(), ev.Kind)
		switch ev.Kind {
		case wire.KindState:
			fmt.Fprintf(b, " %s>%s", ev.OldState, ev.State)
		case wire.KindProbe0, wire.KindKeepalive:
			fmt.Fprintf(b, " out=%d", ev.ProbesOut)
		case wire.KindRetransmit:
			fmt.Fprintf(b, " n=%d", ev.Retransmits)
		case wire.KindDrop:
			fmt.Fprintf(b, " %s", ev.NFHook)
		}
		if ev.SkErr != 0 {
			fmt.Fprintf(b, " err=%d", ev.SkErr)
		}
		if ev.Kind == wire.KindError {
			fmt.Fprintf(b, " errno=%d", ev.Detail)
		}
		b.WriteString(";")
	}
	out := make([]string, 0, len(order))
	for _, c := range order {
		out = append(out, lines[c].String())
	}
	return out
}
