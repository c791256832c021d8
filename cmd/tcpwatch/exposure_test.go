package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
	"github.com/tcpwatch/tcpwatch/internal/testkit/hosts"
)

type exposureJSON struct {
	Type            string `json:"type"`
	NetNS           uint32 `json:"netns"`
	Local, Remote   string
	Inbound         bool   `json:"inbound"`
	PID             int    `json:"pid"`
	Comm            string `json:"comm"`
	Class           string `json:"class"`
	IdleDetectMs    *int64 `json:"idle_detect_ms"`
	IdleDetectBy    string `json:"idle_detect_by"`
	SendingDetectMs *int64 `json:"sending_detect_ms"`
	Why             string `json:"why"`
	Settings        struct {
		Keepalive          bool   `json:"keepalive"`
		KeepaliveIdleMs    int64  `json:"keepalive_idle_ms"`
		KeepaliveIdleFrom  string `json:"keepalive_idle_from"`
		KeepaliveIntvlMs   int64  `json:"keepalive_intvl_ms"`
		KeepaliveCount     int    `json:"keepalive_count"`
		KeepaliveCountFrom string `json:"keepalive_count_from"`
		Retries2           int    `json:"tcp_retries2"`
	} `json:"settings"`
}

func exposureRecords(t *testing.T, args ...string) []exposureJSON {
	t.Helper()
	cmd := tcpwatch(t, append([]string{"exposure", "-o", "json"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tcpwatch exposure %v: %v: %s", args, err, out)
	}
	var recs []exposureJSON
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r exposureJSON
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if r.Type == "exposure" {
			recs = append(recs, r)
		}
	}
	return recs
}

// A real redis-server with tcp-keepalive 60 (it sets TCP_KEEPIDLE 60,
// TCP_KEEPINTVL 20, TCP_KEEPCNT 3 on every accepted socket) and a client
// without keepalive: tcpwatch exposure reads both sockets' own settings,
// tells the client "never" and the server 120 s, and watch mode exports
// the same as a gauge per process name.
func TestExposureRedis(t *testing.T) {
	testkit.RequirePrivileged(t)
	s, c := hosts.Pair(t, "S", "C")
	_, ap := startRedis(t, s, c, s.Addr4(), 60)
	conn, err := redisDial(c, ap)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := exposureRecords(t, "--netns", strconv.Itoa(int(hosts.Netns(t, c))), "--port", "6379")
	if len(client) != 1 {
		t.Fatalf("client side: %d records, want 1: %+v", len(client), client)
	}
	if r := client[0]; r.Class != "never" || r.IdleDetectMs != nil || r.IdleDetectBy != "none" || r.Settings.Keepalive ||
		r.SendingDetectMs == nil || *r.SendingDetectMs != 924600 || r.PID != os.Getpid() || r.Local != conn.LocalAddr().String() {
		t.Errorf("client: %+v", r)
	} else {
		t.Logf("client: class=%s why=%s", r.Class, r.Why)
	}
	sNetNS := strconv.Itoa(int(hosts.Netns(t, s)))
	server := exposureRecords(t, "--comm", "redis-server", "--netns", sNetNS)
	if len(server) != 1 {
		t.Fatalf("server side: %d records, want 1: %+v", len(server), server)
	}
	if r := server[0]; r.Class != "minutes" || r.IdleDetectMs == nil || *r.IdleDetectMs != 120000 || !r.Inbound ||
		!r.Settings.Keepalive || r.Settings.KeepaliveIdleMs != 60000 || r.Settings.KeepaliveIdleFrom != "socket" ||
		r.Settings.KeepaliveIntvlMs != 20000 || r.Settings.KeepaliveCount != 3 || r.Settings.KeepaliveCountFrom != "socket" {
		t.Errorf("server: %+v", r)
	} else {
		t.Logf("server: class=%s why=%s", r.Class, r.Why)
	}

	// Text: the client's "never" comes first.
	out, err := tcpwatch(t, "exposure", "--port", "6379", "--addr", ap.Addr().String()).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[1], "never ") || !strings.Contains(lines[1], "no keepalive") ||
		!strings.HasPrefix(lines[2], "minutes ") || !strings.Contains(lines[2], "redis-server[") {
		t.Errorf("text report:\n%s", out)
	}
	t.Logf("text report:\n%s", out)

	// Watch mode: the gauge per process name.
	port := freePort(t)
	w := startWatch(t, "--netns", sNetNS, "--exposure-every", "1s", "--metrics", fmt.Sprintf("127.0.0.1:%d", port))
	want := `tcpwatch_connections_by_exposure{class="minutes",comm="redis-server"} 1`
	deadline := time.Now().Add(20 * time.Second)
	for {
		body := scrapeBody(t, port)
		if strings.Contains(body, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the metrics after 20s:\n%s", want, grepLines(body, "exposure"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The stats record carries the last snapshot's counts.
	w.stop(t)
	var stats struct {
		Type           string                    `json:"type"`
		Exposure       map[string]int            `json:"exposure"`
		ExposureByComm map[string]map[string]int `json:"exposure_by_comm"`
	}
	for _, line := range strings.Split(w.stdout.String(), "\n") {
		if json.Unmarshal([]byte(line), &stats) == nil && stats.Type == "stats" {
			break
		}
	}
	if stats.Type != "stats" || stats.Exposure["minutes"] != 1 || stats.ExposureByComm["redis-server"]["minutes"] != 1 {
		t.Errorf("stats record: %+v", stats)
	}
}

func scrapeBody(t *testing.T, port int) string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, word string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), word) {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}
