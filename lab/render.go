package lab

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tcpwatch/tcpwatch/output"
)

// Printer renders a run's records as they come: text lines with the time
// since the run started and the host, or JSON lines (`-o json`) whose
// narratives have the same fields as tcpwatch's plus `host`.
func Printer(w *output.Writer) Reporter {
	return func(rec Record) {
		if w.Format() == output.JSON {
			_ = w.JSON(jsonRecord(rec))
			return
		}
		prefix := fmt.Sprintf("+%6.2fs %-4s ", rec.T.Seconds(), rec.Host)
		switch rec.Type {
		case "lab_step":
			_ = w.Line(prefix + rec.What)
		case "narrative":
			_ = w.Line(prefix + string(w.AppendNarrativeText(nil, rec.Narrative, rec.Cgroup)))
		case "event":
			_ = w.Line(prefix + "event: keepalive probe answered (shown with --all)")
		case "notice":
			_ = w.Line(prefix + string(w.AppendNoticeText(nil, rec.Notice, rec.Cgroup)) + " (shown with --all)")
		case "app":
			what := rec.App.What
			if rec.App.Errno != "" {
				what += " " + rec.App.Errno
			}
			_ = w.Line(fmt.Sprintf("%sapp  %s (pid %d): %s", prefix, rec.App.Role, rec.App.PID, output.Sanitize(what)))
		case "lab_result":
			_ = w.Line(prefix + resultText(rec.Result))
		}
	}
}

func resultText(res *Result) string {
	var hosts []string
	for h := range res.Verdicts {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var parts []string
	for _, h := range hosts {
		parts = append(parts, fmt.Sprintf("%s: %s", h, strings.Join(res.Verdicts[h], ", ")))
	}
	var nh []string
	for h := range res.Notices {
		nh = append(nh, h)
	}
	sort.Strings(nh)
	for _, h := range nh {
		parts = append(parts, fmt.Sprintf("%s notices: %s", h, strings.Join(res.Notices[h], ", ")))
	}
	if len(parts) == 0 {
		parts = append(parts, "no narrative")
	}
	verdict := "as expected"
	if !res.OK {
		verdict = "NOT as expected (" + strings.Join(res.Missing, ", ") + ")"
	}
	return fmt.Sprintf("result of %s after %.1fs: %s; %s", res.Scenario, res.Duration.Seconds(), strings.Join(parts, "; "), verdict)
}

type jsonStep struct {
	Type string `json:"type"`
	TMs  int64  `json:"t_ms"`
	Host string `json:"host"`
	What string `json:"what"`
}

type jsonApp struct {
	Type string `json:"type"`
	TMs  int64  `json:"t_ms"`
	Host string `json:"host"`
	AppEvent
}

type jsonNarrative struct {
	Host string `json:"host"`
	TMs  int64  `json:"t_ms"`
	output.NarrativeRecord
}

type jsonEvent struct {
	Host string `json:"host"`
	TMs  int64  `json:"t_ms"`
	output.EventRecord
}

type jsonNotice struct {
	Host string `json:"host"`
	TMs  int64  `json:"t_ms"`
	output.NoticeRecord
}

type jsonResult struct {
	Type       string `json:"type"`
	TMs        int64  `json:"t_ms"`
	DurationMs int64  `json:"duration_ms"`
	*Result
}

func jsonRecord(rec Record) any {
	switch rec.Type {
	case "narrative":
		return jsonNarrative{Host: rec.Host, TMs: rec.TMs, NarrativeRecord: output.NewNarrativeRecord(rec.Narrative, rec.Cgroup)}
	case "event":
		return jsonEvent{Host: rec.Host, TMs: rec.TMs, EventRecord: output.NewEventRecord(rec.Event, rec.ResetReasons, rec.Cgroup)}
	case "notice":
		return jsonNotice{Host: rec.Host, TMs: rec.TMs, NoticeRecord: output.NewNoticeRecord(rec.Notice, rec.Cgroup)}
	case "app":
		return jsonApp{Type: "app", TMs: rec.TMs, Host: rec.Host, AppEvent: *rec.App}
	case "lab_result":
		return jsonResult{Type: "lab_result", TMs: rec.TMs, DurationMs: rec.Result.Duration.Milliseconds(), Result: rec.Result}
	}
	return jsonStep{Type: rec.Type, TMs: rec.TMs, Host: rec.Host, What: rec.What}
}
