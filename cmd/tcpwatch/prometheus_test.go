package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/internal/testkit"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// A real Prometheus (Debian's package) scrapes tcpwatch --metrics while
// connections are refused, and its query API sees the counter rise.
func TestPrometheusScrapesNarratives(t *testing.T) {
	testkit.RequirePrivileged(t)
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: run make deps (it installs Debian's prometheus package)")
	}
	metricsPort, webPort := freePort(t), freePort(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tcpwatch
    static_configs:
      - targets: ["127.0.0.1:%d"]
`, metricsPort)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	w := startWatch(t, "--metrics", fmt.Sprintf("127.0.0.1:%d", metricsPort))
	defer w.stop(t)

	var promLog bytes.Buffer
	p := exec.Command(prom, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", webPort))
	p.Stdout, p.Stderr = &promLog, &promLog
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.Process.Kill()
		p.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", promLog.String())
		}
	}()

	refuse := func() {
		port := freePort(t) // closed once freePort returns
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			t.Fatal("connect to a closed port succeeded")
		}
	}
	query := url.Values{"query": {`tcpwatch_narratives_total{verdict="connect_refused"}`}}
	api := fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?%s", webPort, query.Encode())
	deadline := time.Now().Add(30 * time.Second)
	for {
		refuse()
		if v, ok := queryValue(api); ok && v >= 1 {
			t.Logf("prometheus: tcpwatch_narratives_total{verdict=\"connect_refused\"} = %v", v)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not see tcpwatch_narratives_total{verdict=\"connect_refused\"} >= 1 within 30s")
		}
		time.Sleep(time.Second)
	}
	// The same scrape carries the run's other series.
	for _, q := range []string{"tcpwatch_records_read_total", "tcpwatch_tracked_connections", `tcpwatch_build_info`} {
		u := fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?%s", webPort, url.Values{"query": {q}}.Encode())
		if _, ok := queryValue(u); !ok {
			t.Errorf("Prometheus has no %s", q)
		}
	}
}

// queryValue returns the sum of an instant query's samples.
func queryValue(u string) (float64, bool) {
	resp, err := http.Get(u)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if json.Unmarshal(body, &r) != nil || r.Status != "success" || len(r.Data.Result) == 0 {
		return 0, false
	}
	sum := 0.0
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return 0, false
		}
		sum += v
	}
	return sum, true
}
