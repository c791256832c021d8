package output

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tcpwatch/tcpwatch/output/communityid"
	"github.com/tcpwatch/tcpwatch/tracer/containers"
	"github.com/tcpwatch/tcpwatch/tracer/engine"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

const fleetID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func fleetNarrative() (*tracker.Narrative, containers.Info) {
	return &tracker.Narrative{Time: time.Date(2026, 11, 21, 3, 4, 5, 6, time.UTC), Verdict: tracker.ConnectRefused, Final: true,
			Local: netip.MustParseAddrPort("10.0.0.1:1"), Remote: netip.MustParseAddrPort("10.0.0.2:2"),
			Owner:    tracker.Owner{PID: 42, Comm: "java", Source: wire.OwnerConnect},
			CgroupID: 99, Errno: 111},
		containers.Parse("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f2e3d4c_5b6a_4978_8695_a4b3c2d1e0f9.slice/cri-containerd-" +
			fleetID + ".scope")
}

// The hand-written encoder keeps up with the new fields, filled.
func TestNarrativeJSONWithContainerAndHost(t *testing.T) {
	rec := NewNarrativeRecord(fleetNarrative())
	rec.Host = "node-7\"quoted"
	want, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	got := appendNarrativeJSON(nil, &rec)
	var g, w map[string]any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("hand-written JSON does not parse: %v\n%s", err, got)
	}
	json.Unmarshal(want, &w)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("hand-written JSON differs:\n got %s\nwant %s", got, want)
	}
	if keyOrder(t, got) != keyOrder(t, want) {
		t.Errorf("field order differs:\n got %s\nwant %s", keyOrder(t, got), keyOrder(t, want))
	}
	if g["container_id"] != fleetID || g["pod_uid"] != "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9" ||
		!strings.HasSuffix(g["cgroup"].(string), ".scope") || g["host"] != "node-7\"quoted" {
		t.Errorf("fields: %s", got)
	}
}

// Every JSON record names its host; narratives in text name the container.
func TestHostOnEveryJSONRecord(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, JSON, Options{Host: "node-7"})
	n, cg := fleetNarrative()
	if err := w.Narrative(n, cg); err != nil {
		t.Fatal(err)
	}
	if err := w.Notice(&tracker.Notice{Kind: "time_wait_reuse", Local: n.Local, Remote: n.Remote}, cg); err != nil {
		t.Fatal(err)
	}
	if err := w.Event(sampleEvent("10.0.0.1:1", "10.0.0.2:2"), nil, containers.Info{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Loss(engine.Loss{New: 1, Total: 1, RingFull: 1}); err != nil {
		t.Fatal(err)
	}
	if err := w.Stats(engine.Stats{Events: 3}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if m["host"] != "node-7" {
			t.Errorf("%s record without host: %s", m["type"], l)
		}
	}
	if !strings.Contains(lines[1], `"container_id":"`+fleetID+`"`) {
		t.Errorf("notice without its container: %s", lines[1])
	}
	// A notice's explanation comes with --explain (issue #21: --all tells
	// one a connection on a churning host), with the same other fields.
	if strings.Contains(lines[1], `"explanation"`) || !strings.Contains(lines[1], `"summary":"`) {
		t.Errorf("notice by default: want a summary and no explanation: %s", lines[1])
	}
	var explained bytes.Buffer
	if err := NewWriter(&explained, JSON, Options{Host: "node-7", Explain: true}).Notice(&tracker.Notice{Kind: "time_wait_reuse", Local: n.Local, Remote: n.Remote}, cg); err != nil {
		t.Fatal(err)
	}
	var short, full map[string]any
	json.Unmarshal([]byte(lines[1]), &short)
	json.Unmarshal(explained.Bytes(), &full)
	if full["explanation"] == nil || full["explanation"] == "" {
		t.Errorf("notice with --explain: no explanation: %s", explained.Bytes())
	}
	delete(full, "explanation")
	if !reflect.DeepEqual(short, full) {
		t.Errorf("notice by default and with --explain differ besides the explanation:\n%s\n%s", lines[1], explained.Bytes())
	}

	buf.Reset()
	w = NewWriter(&buf, Text, Options{})
	if err := w.Narrative(n, cg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), " pid=42 comm=java containerd:0123456789ab ") {
		t.Errorf("text: %s", buf.String())
	}
}

// A loop check that the filter and the JSON agree on what a container is.
func TestFilterAndRecordAgree(t *testing.T) {
	n, cg := fleetNarrative()
	f := engine.Filter{Container: NewNarrativeRecord(n, cg).ContainerID[:12]}
	if !f.Match(&engine.Item{Narrative: n, Cgroup: cg}) {
		t.Error("--container with the record's short id does not match it")
	}
}

// The hand-written notice encoder gives what encoding/json gives, with and
// without the explanation, with a thread and a container.
func TestNoticeJSONHandWritten(t *testing.T) {
	n, cg := fleetNarrative()
	for _, explain := range []bool{false, true} {
		notice := &tracker.Notice{Time: n.Time, Kind: "time_wait_syn_accepted", Cookie: 7, Local: n.Local, Remote: n.Remote,
			NetNS: 4026531833, Owner: tracker.Owner{PID: 42, Comm: "java", Thread: "worker-3 <&>"}, Age: 367 * time.Millisecond,
			CauseUnseen: explain}
		rec := NewNoticeRecord(notice, cg)
		rec.Host = "node-7\"quoted"
		if !explain {
			rec.Explanation = ""
		}
		want, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		got := appendNoticeJSON(nil, &rec)
		var g, w map[string]any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("hand-written JSON does not parse: %v\n%s", err, got)
		}
		json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("explain %v: hand-written JSON differs:\n got %s\nwant %s", explain, got, want)
		}
		if keyOrder(t, got) != keyOrder(t, want) {
			t.Errorf("explain %v: field order differs:\n got %s\nwant %s", explain, keyOrder(t, got), keyOrder(t, want))
		}
		// And the writer's line is the same record.
		var buf bytes.Buffer
		if err := NewWriter(&buf, JSON, Options{Host: rec.Host, Explain: explain}).Notice(notice, cg); err != nil {
			t.Fatal(err)
		}
		var l map[string]any
		if err := json.Unmarshal(buf.Bytes(), &l); err != nil || !reflect.DeepEqual(l, w) {
			t.Errorf("explain %v: the writer's notice %s, want %s (%v)", explain, buf.Bytes(), want, err)
		}
	}
}

// The notice a Writer encodes without building its record is the record's
// hand-written JSON byte for byte: either address family, a thread or
// none, a container or none, a seed, routine kinds and others, with and
// without --explain, and no address at all; and the Community IDs the
// writer remembers are the ones it would compute.
func TestNoticeLineIsTheRecord(t *testing.T) {
	n, cg := fleetNarrative()
	v6l, v6r := netip.MustParseAddrPort("[2001:db8::1]:443"), netip.MustParseAddrPort("[2001:db8::2]:50000")
	var ids communityid.Cache
	for _, kind := range []string{"time_wait_syn_accepted", "time_wait_reuse", tracker.NoticeSynAnsweredOldAck} {
		for _, addrs := range [][2]netip.AddrPort{{n.Local, n.Remote}, {v6l, v6r}, {n.Remote, n.Local}, {}} {
			for _, thread := range []string{"", "worker-3 <&>"} {
				for _, c := range []containers.Info{{}, cg} {
					for _, seed := range []uint16{0, 7} {
						for _, explain := range []bool{false, true} {
							notice := &tracker.Notice{Time: n.Time, Kind: kind, Cookie: 7, Local: addrs[0], Remote: addrs[1],
								NetNS: 4026531833, Owner: tracker.Owner{PID: 42, Comm: "java", Thread: thread}, Age: 367 * time.Millisecond,
								CauseUnseen: kind == "time_wait_syn_accepted" && seed == 7}
							rec := NewNoticeRecordSeeded(notice, c, seed)
							rec.Host = "node-7\"quoted"
							if !explain && RoutineNotice(notice) {
								rec.Explanation = ""
							}
							want := string(appendNoticeJSON(nil, &rec))
							if got := string(appendNoticeLine(nil, notice, c, rec.Host, seed, &ids, explain)); got != want {
								t.Errorf("%s %v thread %q seed %d explain %v:\n got %s\nwant %s", kind, addrs, thread, seed, explain, got, want)
							}
						}
					}
				}
			}
		}
	}
}
