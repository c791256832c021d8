package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gdamore/tcell/v2"

	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
	"github.com/tcpwatch/tcpwatch/tracer/incident/stage"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
)

// topMembers bounds the connections a live view receives per incident:
// more do not fit on a screen.
const topMembers = 200

// runTop is `tcpwatch top`: a full-screen view of the open incidents and
// their connections, refreshed every second, until q (or SIGINT/SIGTERM,
// or --duration). The terminal is restored on every way out: the screen is
// finished by a deferred call on this goroutine, and the engine's
// goroutine hands a panic back here instead of crashing past it.
func runTop(ctx context.Context, eng *engine.Engine, fl *fleet) (err error) {
	screen, err := tcell.NewScreen()
	if err != nil {
		return fmt.Errorf("top needs a terminal: %w", err)
	}
	if err := screen.Init(); err != nil {
		return fmt.Errorf("top needs a terminal: %w", err)
	}
	defer screen.Fini()

	var latest atomic.Pointer[[]incident.Live]
	st := stage.New(stage.Options{Telling: stage.Lines, SharedFate: (&incident.SharedFateReader{}).Read, Observe: fl.observeIncident, InTrouble: fl.incidentInTrouble(),
		Live: func(l []incident.Live) { latest.Store(&l) }, LiveMembers: topMembers})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("internal error: %v", r)
			}
		}()
		_, err := eng.Run(ctx, engine.Chain(engine.SinkFunc(func(*engine.Item) error { return nil }), append(fl.stages(), st.Stage)...))
		done <- err
	}()

	events := make(chan tcell.Event, 16)
	quit := make(chan struct{})
	go screen.ChannelEvents(events, quit)
	defer close(quit)

	v := &topView{expanded: map[string]bool{}}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	draw := func() {
		var live []incident.Live
		if p := latest.Load(); p != nil {
			live = *p
		}
		v.draw(screen, live, time.Now())
	}
	draw()
	for {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return waitEngine(done)
		case <-tick.C:
			draw()
		case ev := <-events:
			switch ev := ev.(type) {
			case *tcell.EventResize:
				screen.Sync()
				draw()
			case *tcell.EventKey:
				if v.key(ev) {
					cancel()
					return waitEngine(done)
				}
				draw()
			}
		}
	}
}

// haveTerminal says, before anything is loaded, whether top has a
// terminal to draw on (tcell opens /dev/tty).
func haveTerminal() error {
	f, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("top needs a terminal: %w", err)
	}
	return f.Close()
}

// waitEngine waits for the engine to stop after its context ended.
func waitEngine(done <-chan error) error {
	select {
	case err := <-done:
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case <-time.After(10 * time.Second):
		return errors.New("top: the engine did not stop within 10s")
	}
}

// topView is what the person chose to see.
type topView struct {
	selected string // the selected incident's id
	expanded map[string]bool
	ids      []string // the incidents on screen, in order
}

// key handles a key press; it says whether to quit.
func (v *topView) key(ev *tcell.EventKey) bool {
	move := func(d int) {
		i := 0
		for j, id := range v.ids {
			if id == v.selected {
				i = j
			}
		}
		if i+d >= 0 && i+d < len(v.ids) {
			v.selected = v.ids[i+d]
		}
	}
	switch ev.Key() {
	case tcell.KeyCtrlC, tcell.KeyEscape:
		return true
	case tcell.KeyUp:
		move(-1)
	case tcell.KeyDown:
		move(1)
	case tcell.KeyEnter, tcell.KeyRight:
		v.expanded[v.selected] = !v.expanded[v.selected] || ev.Key() == tcell.KeyRight
	case tcell.KeyLeft:
		v.expanded[v.selected] = false
	case tcell.KeyRune:
		switch ev.Rune() {
		case 'q', 'Q':
			return true
		case 'k':
			move(-1)
		case 'j':
			move(1)
		case ' ':
			v.expanded[v.selected] = !v.expanded[v.selected]
		}
	}
	return false
}

var (
	styleHeader  = tcell.StyleDefault.Reverse(true)
	styleSel     = tcell.StyleDefault.Bold(true)
	styleDim     = tcell.StyleDefault.Dim(true)
	styleBarFull = tcell.StyleDefault.Foreground(tcell.ColorRed)
	styleBarLeft = tcell.StyleDefault.Foreground(tcell.ColorGreen)
)

// barWidth is the countdown bar's length in cells.
const barWidth = 20

func (v *topView) draw(s tcell.Screen, live []incident.Live, now time.Time) {
	s.Clear()
	width, height := s.Size()
	y := 0
	put := func(x int, text string, style tcell.Style) int {
		for _, r := range text {
			if x >= width {
				break
			}
			s.SetContent(x, y, r, nil, style)
			x++
		}
		return x
	}
	trouble := 0
	for _, l := range live {
		trouble += l.InTrouble
	}
	head := fmt.Sprintf(" tcpwatch top  %s  %d open, %d connections in trouble   ↑↓ select  enter expand  q quit",
		now.Format("15:04:05"), len(live), trouble)
	x := put(0, head, styleHeader)
	for ; x < width; x++ {
		s.SetContent(x, y, ' ', nil, styleHeader)
	}
	y += 2
	v.ids = v.ids[:0]
	for _, l := range live {
		v.ids = append(v.ids, l.ID)
	}
	if v.selected == "" || !containsID(v.ids, v.selected) {
		v.selected = ""
		if len(v.ids) > 0 {
			v.selected = v.ids[0]
		}
	}
	if len(live) == 0 {
		put(1, "no connection in trouble", styleDim)
	}
	for _, l := range live {
		if y >= height {
			break
		}
		style := tcell.StyleDefault
		mark := "  "
		if l.ID == v.selected {
			style, mark = styleSel, "> "
		}
		open := "▸ "
		if v.expanded[l.ID] {
			open = "▾ "
		}
		x := put(0, mark+open, style)
		kind := "incident"
		if l.Phase == "" {
			kind = "lone"
		}
		x = put(x, fmt.Sprintf("%s %s  %d conns (%s)  since %s (%s)  ", kind, words.Peer(&l.Incident), l.Connections,
			words.VerdictMix(l.Verdicts), l.Onset.Format("15:04:05"), words.Secs(now.Sub(l.Onset).Truncate(time.Second))), style)
		x = countdown(s, x, y, l.Onset, l.GiveUpFirst, now, width)
		y++
		if y < height {
			put(6, "owners: "+topOwners(l.Owners), styleDim)
			y++
		}
		if sf := l.SharedFate; sf != nil && sf.Idle > 0 && y < height {
			put(6, "+ "+words.SharedFateText(sf), styleDim)
			y++
		}
		if !v.expanded[l.ID] {
			continue
		}
		shown := 0
		for i, m := range l.Members {
			// Keep the last line for how many are not shown.
			if y >= height || y == height-1 && i < l.Followed-1 {
				break
			}
			shown++
			line := fmt.Sprintf("%s -> %s  %s/%d  %s", m.Local, m.Remote, m.Comm, m.PID, m.Verdict)
			if m.Retransmits > 0 {
				line += fmt.Sprintf(" retrans=%d", m.Retransmits)
			}
			if m.Probes > 0 {
				line += fmt.Sprintf(" probes=%d", m.Probes)
			}
			if m.RTO > 0 && m.InTrouble {
				line += " rto=" + words.Secs(m.RTO)
			}
			if m.Errno != 0 {
				line += " errno=" + tcp.ErrnoName(m.Errno)
			}
			x := put(6, fmt.Sprintf("%-78s ", line), tcell.StyleDefault)
			if m.InTrouble {
				countdown(s, x, y, l.Onset, m.GiveUp, now, width)
			}
			y++
		}
		if shown < l.Followed && y < height {
			put(6, fmt.Sprintf("… %d more connections", l.Followed-shown), styleDim)
			y++
		}
	}
	s.Show()
}

// countdown draws a bar from the onset to the projected give-up (filled
// as time passes) and the time left.
func countdown(s tcell.Screen, x, y int, onset, giveUp, now time.Time, width int) int {
	if giveUp.IsZero() {
		return x
	}
	left := giveUp.Sub(now)
	frac := 1.0
	if total := giveUp.Sub(onset); total > 0 && left > 0 {
		frac = 1 - float64(left)/float64(total)
	}
	filled := int(frac * barWidth)
	label := "gives up in " + words.Secs(left.Truncate(100*time.Millisecond))
	if left <= 0 {
		label = "gave up at " + giveUp.Format("15:04:05")
	}
	for _, r := range label + " [" {
		if x < width {
			s.SetContent(x, y, r, nil, tcell.StyleDefault)
		}
		x++
	}
	for i := 0; i < barWidth; i++ {
		r, style := '░', styleBarLeft
		if i < filled {
			r, style = '█', styleBarFull
		}
		if x < width {
			s.SetContent(x, y, r, nil, style)
		}
		x++
	}
	if x < width {
		s.SetContent(x, y, ']', nil, tcell.StyleDefault)
	}
	return x + 1
}

func topOwners(owners []incident.Owner) string {
	var parts []string
	for i, o := range owners {
		if i == 8 {
			parts = append(parts, fmt.Sprintf("+%d more", len(owners)-8))
			break
		}
		who := fmt.Sprintf("%s (pid %d) ×%d", o.Comm, o.PID, o.Connections)
		if o.Container != "" {
			who += " container " + o.Container[:min(12, len(o.Container))]
		}
		parts = append(parts, who)
	}
	return strings.Join(parts, ", ")
}

func containsID(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
