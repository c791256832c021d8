package main

import (
	"bytes"
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/lab"
	"github.com/tcpwatch/tcpwatch/output"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// End to end, the command with --all -o json while the lab makes article
// 004's old SYN (timewait-syn-old): B's notices carry the kernel's figures
// in their time_wait object (docs/json.md), and their words.
func TestTimeWaitNoticesEndToEnd(t *testing.T) {
	testkit.RequirePrivileged(t)
	cmd := tcpwatch(t, "--all", "-o", "json", "--port", "8080")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, cmd.Process.Pid)
	res, err := lab.Run(context.Background(), "timewait-syn-old", lab.Options{}, func(lab.Record) {})
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	if werr := cmd.Wait(); werr != nil {
		t.Errorf("tcpwatch: %v: %s", werr, stderr.String())
	}
	if err != nil || !res.OK {
		t.Fatalf("lab: %v %+v", err, res)
	}
	got := map[string]output.NoticeRecord{}
	for _, n := range testkit.JSONLines(stdout.String(), func(n output.NoticeRecord) bool {
		return n.Type == "event" && n.TimeWait != nil && slices.Contains(res.NetNS["B"], n.NetNS)
	}) {
		if _, seen := got[n.Kind]; !seen {
			got[n.Kind] = n
		}
	}
	syn, ok := got[tracker.NoticeTimeWaitSynRejected]
	if !ok {
		t.Fatalf("no %s from B among:\n%s", tracker.NoticeTimeWaitSynRejected, stdout.String())
	}
	// The lab stops the transfer 32 MiB ahead of A's ISN clock: how much
	// of that is left when the SYN comes depends on the machine, that it
	// is behind does not (the kernel rejected it), and the figure must be
	// the kernel's two numbers' difference.
	if tw := syn.TimeWait; tw.SeqAhead >= 0 || tw.SeqAhead != int32(tw.Seq-tw.RcvNxt) || !tw.Answered || tw.RFC1337 || tw.LeftMs < 55000 || tw.TSval != 0 ||
		syn.LPort != 8080 || syn.RPort != 40000 || syn.Summary == "" || syn.Explanation == "" {
		t.Errorf("%s: %+v %+v", syn.Kind, syn.TimeWait, syn.ConnFields)
	}
	rst, ok := got[tracker.NoticeTimeWaitRstEnded]
	if !ok {
		t.Fatalf("no %s from B", tracker.NoticeTimeWaitRstEnded)
	}
	if tw := rst.TimeWait; tw.SeqAhead != 0 || tw.Seq != syn.TimeWait.RcvNxt || rst.Cookie != syn.Cookie {
		t.Errorf("%s: %+v cookie %d, want the RST at the SYN's rcv_nxt %d, cookie %d", rst.Kind, rst.TimeWait, rst.Cookie, syn.TimeWait.RcvNxt, syn.Cookie)
	}
	// A's side: it reset the old ACK its SYN got (6.10+ names the reason).
	var client []output.NoticeRecord
	for _, n := range testkit.JSONLines(stdout.String(), func(n output.NoticeRecord) bool {
		return n.Type == "event" && n.Kind == tracker.NoticeSynAnsweredOldAck && slices.Contains(res.NetNS["A"], n.NetNS)
	}) {
		client = append(client, n)
	}
	if len(client) != 1 || client[0].ResetReason != "TCP_INVALID_ACK_SEQUENCE" || client[0].LPort != 40000 || client[0].Comm != "lab-client" {
		t.Errorf("A: %+v, want one %s by lab-client from port 40000", client, tracker.NoticeSynAnsweredOldAck)
	}
	t.Logf("B: %s seq_ahead=%d left_ms=%d; %s at rcv_nxt %d, %d ms early", syn.Kind, syn.TimeWait.SeqAhead, syn.TimeWait.LeftMs,
		rst.Kind, rst.TimeWait.RcvNxt, rst.TimeWait.LeftMs)
}
