package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/lab"
	"github.com/tcpwatch/tcpwatch/output/communityid"
)

// The real command with --schema v2 names a real connection's failure in
// the semantic conventions' words, both ends joined by their Community ID
// under a seed of their own.
func TestSchemaV2EndToEnd(t *testing.T) {
	testkit.RequirePrivileged(t)
	cmd := tcpwatch(t, "-o", "json", "--schema", "v2", "--community-id-seed", "7", "--host-name", "node-v2")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitRunning(t, cmd.Process.Pid)
	res, err := lab.Run(context.Background(), "process-crash", lab.Options{}, func(lab.Record) {})
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	if werr := cmd.Wait(); werr != nil {
		t.Fatalf("tcpwatch: %v: %s", werr, stderr.String())
	}
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	byVerdict := map[string]map[string]any{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) != nil || r["type"] != "narrative" {
			continue
		}
		ns, _ := r["tcpwatch.netns"].(float64)
		if slices.Contains(res.NetNS["A"], uint32(ns)) || slices.Contains(res.NetNS["B"], uint32(ns)) {
			byVerdict[r["tcpwatch.verdict"].(string)] = r
		}
	}
	a, b := byVerdict["peer_closed"], byVerdict["local_process_exited"]
	if a == nil || b == nil {
		t.Fatalf("no peer_closed (A) and local_process_exited (B) among:\n%s", stdout.String())
	}
	for _, r := range []map[string]any{a, b} {
		if r["schema"] != "2" || r["host.name"] != "node-v2" || r["network.transport"] != "tcp" || r["network.type"] != "ipv4" ||
			r["body"] == "" || r["process.pid"] == nil || r["process.executable.name"] == nil {
			t.Errorf("v2 narrative lacks the conventions' fields: %v", r)
		}
		if _, v1 := r["laddr"]; v1 {
			t.Errorf("v2 narrative has v1 names: %v", r)
		}
	}
	if a["severity"] != "INFO" || b["severity"] != "ERROR" || a["error.type"] != "EPIPE" {
		t.Errorf("A: severity %v error.type %v; B: severity %v", a["severity"], a["error.type"], b["severity"])
	}
	ap := func(r map[string]any, side string) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr(r["network."+side+".address"].(string)), uint16(r["network."+side+".port"].(float64)))
	}
	want := communityid.Flow(7, communityid.TCP, ap(a, "local"), ap(a, "peer"))
	if a["network.community_id"] != want || b["network.community_id"] != want || ap(a, "local") != ap(b, "peer") {
		t.Errorf("community ids: A %v, B %v, want %s for both", a["network.community_id"], b["network.community_id"], want)
	}
}
