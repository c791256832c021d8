package output

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/tcpwatch/tcpwatch/output/words"
	"github.com/tcpwatch/tcpwatch/tracer/incident"
	"github.com/tcpwatch/tcpwatch/tracer/tcp"
	"github.com/tcpwatch/tcpwatch/tracer/tracker"
	"github.com/tcpwatch/tcpwatch/tracer/wire"
)

// Schema is the version of the JSON lines' field names.
type Schema int

const (
	// SchemaV1 is tcpwatch's own names (laddr, rport, pid, …), the
	// default: what existing consumers read.
	SchemaV1 Schema = 1
	// SchemaV2 is the names of OpenTelemetry's semantic conventions
	// (network.peer.address, process.pid, container.id, …) where they
	// exist and tcpwatch.* for the rest: the same names as the attributes
	// of the OTLP log records (--otlp), so one query reads both.
	SchemaV2 Schema = 2
)

// ParseSchema reads the --schema flag.
func ParseSchema(s string) (Schema, error) {
	switch s {
	case "v1", "1":
		return SchemaV1, nil
	case "v2", "2":
		return SchemaV2, nil
	}
	return 0, fmt.Errorf("unknown --schema %q (want v1 or v2)", s)
}

// Attr is one attribute of a record in the v2 names. Value is a string,
// int64, bool, []int64, []TimelineStep, or a nested part of an incident
// record (owners, joined connections: any value encoding/json takes).
type Attr struct {
	Key   string
	Value any
}

// V2Names maps each v1 field (nested ones as settings.<name>) to its v2
// name where the two differ by more than the tcpwatch. prefix; the
// fields not listed are tcpwatch.<v1 name>. docs/pipelines.md shows this
// table; TestPipelinesDocListsV2Names keeps the two the same.
var V2Names = map[string]string{
	"host":         "host.name",
	"family":       "network.type",
	"laddr":        "network.local.address",
	"lport":        "network.local.port",
	"raddr":        "network.peer.address",
	"rport":        "network.peer.port",
	"pid":          "process.pid",
	"comm":         "process.executable.name",
	"thread":       "thread.name",
	"container_id": "container.id",
	"pod_uid":      "k8s.pod.uid",
	"community_id": "network.community_id",
	"errno":        "error.type",
	"peer.addr":    "network.peer.address",
	"peer.port":    "network.peer.port",
}

// v2Top are the v1 fields that are not attributes in v2: the record's
// kind and time, and the summary, which is the body.
var v2Top = map[string]bool{"type": true, "time": true, "summary": true}

// V2Name is the v2 name of a v1 field.
func V2Name(v1 string) string {
	if n, ok := V2Names[v1]; ok {
		return n
	}
	return "tcpwatch." + v1
}

// Transport is the network.transport of every record about a connection.
const Transport = "tcp"

// leaf is one field of a record type: where it is and what it is called.
type leaf struct {
	index     []int
	key       string // the v1 name
	v2        string // the v2 name
	omitEmpty bool
}

var plans sync.Map // reflect.Type -> []leaf

// planOf lists the leaves of a record type in field order (embedded
// structs inline, nested ones as <field>.<name>).
func planOf(t reflect.Type) []leaf {
	if p, ok := plans.Load(t); ok {
		return p.([]leaf)
	}
	var out []leaf
	var walk func(t reflect.Type, index []int, prefix string)
	walk = func(t reflect.Type, index []int, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			idx := append(append([]int(nil), index...), i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if f.Anonymous && name == "" {
				walk(f.Type, idx, prefix)
				continue
			}
			if name == "" || name == "-" {
				continue
			}
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, idx, prefix+name+".")
				continue
			}
			out = append(out, leaf{index: idx, key: prefix + name, v2: V2Name(prefix + name), omitEmpty: strings.Contains(opts, "omitempty")})
		}
	}
	walk(t, nil, "")
	plans.Store(t, out)
	return out
}

// Attrs lists a record's attributes in v2 names (rec is a pointer to a
// NarrativeRecord, NoticeRecord, EventRecord or IncidentRecord). What is unknown is left
// out rather than told as empty: an empty string, a process id 0.
// network.transport is added to records about a connection.
func Attrs(rec any) []Attr {
	v := reflect.ValueOf(rec).Elem()
	plan := planOf(v.Type())
	attrs := make([]Attr, 0, len(plan)+1)
	for _, l := range plan {
		if v2Top[l.key] {
			continue
		}
		f := v.FieldByIndex(l.index)
		if l.omitEmpty && f.IsZero() {
			continue
		}
		key := l.v2
		var val any
		switch f.Kind() {
		case reflect.String:
			if f.Len() == 0 {
				continue
			}
			val = f.String()
		case reflect.Bool:
			val = f.Bool()
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			val = f.Int()
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			// OTLP integers are int64: a cookie above 2^63 would wrap,
			// but the kernel counts cookies up from 1.
			val = int64(f.Uint())
		case reflect.Pointer, reflect.Map, reflect.Slice:
			if f.IsNil() {
				continue
			}
			val = f.Interface()
		default:
			val = f.Interface()
		}
		if key == "process.pid" && val == int64(0) {
			continue
		}
		attrs = append(attrs, Attr{key, val})
		if key == "network.peer.port" {
			attrs = append(attrs, Attr{"network.transport", Transport})
		}
	}
	return attrs
}

// NarrativeAttrs are a narrative's v2 attributes. A normal lifecycle
// (Lifecycle) leaves out its explanation, timeline and settings, the same
// every time, as its v1 short form does, unless explain.
func NarrativeAttrs(rec *NarrativeRecord, n *tracker.Narrative, explain bool) []Attr {
	attrs := Attrs(rec)
	if explain || !Lifecycle(n) {
		return attrs
	}
	out := attrs[:0]
	for _, a := range attrs {
		if a.Key == "tcpwatch.explanation" || a.Key == "tcpwatch.timeline" || strings.HasPrefix(a.Key, "tcpwatch.settings.") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// IncidentSeverity grades an incident: an ERROR once a connection died of
// it, INFO when it closed with every connection recovered, else WARN.
func IncidentSeverity(inc *incident.Incident) Severity {
	switch {
	case inc.Failed > 0:
		return SeverityError
	case inc.Phase == incident.Close:
		return SeverityInfo
	}
	return SeverityWarn
}

// Severity is how grave a record is, in OpenTelemetry's log severities.
type Severity struct {
	Text   string
	Number int // the OTLP SeverityNumber
}

var (
	SeverityDebug = Severity{"DEBUG", 5}
	SeverityInfo  = Severity{"INFO", 9}
	SeverityWarn  = Severity{"WARN", 13}
	SeverityError = Severity{"ERROR", 17}
)

// VerdictSeverity is a verdict's severity in OpenTelemetry's terms, from
// the verdict registry's: a failure is an ERROR, an episode in progress a
// WARN, a normal end or an outage survived INFO.
func VerdictSeverity(v tracker.Verdict) Severity {
	switch words.SeverityOf(v) {
	case words.Normal:
		return SeverityInfo
	case words.Warning:
		return SeverityWarn
	}
	return SeverityError
}

// appendV2 writes one record in the v2 schema: the kind, time, severity
// and body first, then the attributes in their record's field order.
func appendV2(b []byte, typ, time string, sev Severity, body string, attrs []Attr) []byte {
	b = append(b, `{"schema":"2"`...)
	b = appendStringField(b, "type", typ)
	b = appendStringField(b, "time", time)
	b = appendStringField(b, "severity", sev.Text)
	b = appendStringField(b, "body", body)
	for _, a := range attrs {
		switch v := a.Value.(type) {
		case string:
			b = appendStringField(b, a.Key, v)
		case int64:
			b = appendIntField(b, a.Key, v)
		case bool:
			b = appendBoolField(b, a.Key, v)
		case []int64:
			b = append(appendKey(b, a.Key), '[')
			for i, x := range v {
				if i > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendInt(b, x, 10)
			}
			b = append(b, ']')
		case []TimelineStep:
			b = append(appendKey(b, a.Key), '[')
			for i, s := range v {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, `{"t_ms":`...)
				b = strconv.AppendInt(b, s.TMs, 10)
				b = append(appendStringField(b, "event", s.Event), '}')
			}
			b = append(b, ']')
		default:
			j, err := json.Marshal(v)
			if err != nil {
				j = []byte(strconv.Quote(err.Error()))
			}
			b = append(appendKey(b, a.Key), j...)
		}
	}
	return append(b, '}')
}

// EventText is the text line of a kernel event (the v2 record's body).
func EventText(ev *wire.Event, reasons tcp.ResetReasons) string {
	return string(appendEventText(nil, ev, reasons))
}
