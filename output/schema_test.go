package output

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tcpwatch/tcpwatch/output/communityid"
	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
)

// A v2 line carries every v1 field under its v2 name, with the same value
// (what v1 tells as "" or pid 0, unknown, is absent), and the semantic
// conventions' names for the connection.
func TestSchemaV2CarriesEveryV1Field(t *testing.T) {
	n := replayFor(t, "host-down", "A", tracker.RetransmitTimeout, false)
	n.Owner.Comm = "lab-client"
	var b1, b2 bytes.Buffer
	if err := NewWriter(&b1, JSON, Options{Host: "node-1"}).Narrative(n, containers.Info{}); err != nil {
		t.Fatal(err)
	}
	if err := NewWriter(&b2, JSON, Options{Host: "node-1", Schema: SchemaV2}).Narrative(n, containers.Info{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("v2: %s", b2.Bytes())
	var v1, v2 map[string]any
	if err := json.Unmarshal(b1.Bytes(), &v1); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b2.Bytes(), &v2); err != nil {
		t.Fatalf("%v: %s", err, b2.Bytes())
	}
	if v2["schema"] != "2" || v2["type"] != "narrative" || v2["time"] != v1["time"] || v2["body"] != v1["summary"] || v2["severity"] != "ERROR" {
		t.Errorf("v2 head: schema %v type %v time %v severity %v body %v", v2["schema"], v2["type"], v2["time"], v2["severity"], v2["body"])
	}
	for k, want := range v1 {
		if k == "settings" {
			for sk, sv := range want.(map[string]any) {
				if got := v2["tcpwatch.settings."+sk]; !reflect.DeepEqual(got, sv) {
					t.Errorf("settings.%s: v2 %v, v1 %v", sk, got, sv)
				}
			}
			continue
		}
		if v2Top[k] {
			continue
		}
		got, ok := v2[V2Name(k)]
		if !ok && (want == "" || (k == "pid" && want == float64(0))) {
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s -> %s: v2 %v, v1 %v", k, V2Name(k), got, want)
		}
	}
	for k, want := range map[string]any{
		"network.peer.address": v1["raddr"], "network.peer.port": v1["rport"], "network.local.address": v1["laddr"],
		"network.transport": "tcp", "network.type": "ipv4", "error.type": "ETIMEDOUT", "host.name": "node-1",
		"tcpwatch.verdict": "retransmit_timeout", "process.executable.name": "lab-client",
	} {
		if v2[k] != want {
			t.Errorf("%s = %v, want %v", k, v2[k], want)
		}
	}
	if _, ok := v2["container.id"]; ok {
		t.Errorf("container.id present for a host process: %v", v2["container.id"])
	}
}

// Every registered verdict's OTLP severity follows the registry's.
func TestVerdictSeverity(t *testing.T) {
	want := map[words.Severity]string{words.Normal: "INFO", words.Warning: "WARN", words.Failure: "ERROR"}
	for _, e := range words.Registry {
		if got := VerdictSeverity(e.Verdict).Text; got != want[e.Severity] {
			t.Errorf("%s (%s): %s, want %s", e.Verdict, e.Severity, got, want[e.Severity])
		}
	}
	for v, w := range map[tracker.Verdict]string{tracker.RetransmitTimeout: "ERROR", tracker.Stalled: "WARN", tracker.PeerClosed: "INFO"} {
		if got := VerdictSeverity(v).Text; got != w {
			t.Errorf("%s: %s, want %s", v, got, w)
		}
	}
}

// docs/pipelines.md's table of v2 names is the code's.
func TestPipelinesDocListsV2Names(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "pipelines.md"))
	if err != nil {
		t.Fatal(err)
	}
	for v1, v2 := range V2Names {
		row := "| `" + v1 + "` | `" + v2 + "` |"
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/pipelines.md has no row %q", row)
		}
	}
}

// A kernel event in v2: its text line as body, DEBUG, the connection in
// the conventions' names, and what v1 omits when empty omitted too.
func TestSchemaV2Event(t *testing.T) {
	ev := sampleEvent("[2001:db8::1]:443", "[2001:db8::2]:51000")
	var buf bytes.Buffer
	cg := containers.Info{Path: "/kubepods.slice/x", ID: strings.Repeat("ab", 32), PodUID: "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"}
	if err := NewWriter(&buf, JSON, Options{Schema: SchemaV2, CommunityIDSeed: 3}).Event(ev, nil, cg); err != nil {
		t.Fatal(err)
	}
	var v2 map[string]any
	if err := json.Unmarshal(buf.Bytes(), &v2); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	want := map[string]any{
		"schema": "2", "type": "event", "severity": "DEBUG", "body": EventText(ev, nil),
		"tcpwatch.kind": "retransmit", "network.type": "ipv6", "network.transport": "tcp",
		"network.local.address": "2001:db8::1", "network.local.port": float64(443),
		"network.peer.address": "2001:db8::2", "network.peer.port": float64(51000),
		"process.pid": float64(77), "process.executable.name": "curl",
		"container.id": cg.ID, "k8s.pod.uid": cg.PodUID, "tcpwatch.cgroup": cg.Path,
		"network.community_id": communityid.Flow(3, communityid.TCP, ev.Local, ev.Remote),
		"tcpwatch.retransmits": float64(2), "tcpwatch.settings.tcp_retries2": float64(15),
	}
	for k, w := range want {
		if v2[k] != w {
			t.Errorf("%s = %v, want %v", k, v2[k], w)
		}
	}
	for _, k := range []string{"tcpwatch.old_state", "error.type", "tcpwatch.reset_reason", "laddr"} {
		if _, ok := v2[k]; ok {
			t.Errorf("%s present: %v", k, v2[k])
		}
	}
}
