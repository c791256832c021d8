package output

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpwatch/tcpwatch/output/communityid"
)

// Format is how records are written.
type Format int

const (
	Text Format = iota // one line per record, for a person
	JSON               // one JSON object per line, for pipelines
)

// ParseFormat reads the -o flag.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "text":
		return Text, nil
	case "json":
		return JSON, nil
	}
	return 0, fmt.Errorf("unknown output format %q (want text or json)", s)
}

// TimeLayout is RFC 3339 with nanoseconds, the `time` field of every record.
const TimeLayout = time.RFC3339Nano

// Writer writes records one line at a time, each line in one write so
// that a pipeline never sees half a record; with Options.Batch, whole
// lines are held and written together by Flush.
type Writer struct {
	out     io.Writer
	format  Format
	color   bool
	explain bool
	batch   bool
	// connections writes the narratives of connections in an incident in
	// full (JSON), not folded into the incident's records.
	connections bool
	incidents   map[string]int // for the stats record
	line        []byte
	held        []byte // whole lines waiting for Flush (Batch)
	host        string
	// exposure and exposureByComm go into the stats record (SetExposure).
	exposure       map[string]int
	exposureByComm map[string]map[string]int
	seed           uint16
	schema         Schema
	// ids: the Community IDs of the flows written lately (both ends of a
	// connection, and its notices, carry the same).
	ids communityid.Cache
}

// Options tune the text format.
type Options struct {
	Color   bool // ANSI colour for verdicts; only for a terminal
	Explain bool // add each narrative's explanation in text mode
	// Host is the `host` of every JSON record: which machine said it.
	Host string
	// Batch holds whole lines and writes them with one write() when
	// Flush is called or batchMax bytes are held; the caller must Flush
	// whenever it runs out of work. A write per line was a tenth of
	// tcpwatch --all's CPU under connection churn (issue #11).
	Batch bool
	// Connections writes the narratives of connections in an incident in
	// full in JSON, instead of folded (--connections).
	Connections bool
	// CommunityIDSeed seeds the `community_id` of every record about a
	// connection (0, the specification's default, unless every tool
	// whose records are joined uses another).
	CommunityIDSeed uint16
	// Schema names the JSON fields: SchemaV1 (the default) or SchemaV2.
	Schema Schema
}

// batchMax bounds what a batching Writer holds before it writes.
const batchMax = 64 << 10

// NewWriter writes to out in the given format.
func NewWriter(out io.Writer, format Format, opts Options) *Writer {
	return &Writer{out: out, format: format, color: opts.Color && format == Text, explain: opts.Explain,
		host: opts.Host, batch: opts.Batch, connections: opts.Connections, seed: opts.CommunityIDSeed,
		schema: opts.Schema}
}

// IsTerminal says whether f is a terminal (for colour).
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// ErrClosedOutput means the reader went away (`tcpwatch | head`): stop
// quietly, it is not a failure.
var ErrClosedOutput = errors.New("output closed")

func (w *Writer) writeLine() error {
	w.line = append(w.line, '\n')
	if w.batch {
		w.held = append(w.held, w.line...)
		w.line = w.line[:0]
		if len(w.held) >= batchMax {
			return w.Flush()
		}
		return nil
	}
	err := w.write(w.line)
	w.line = w.line[:0]
	return err
}

// Flush writes the lines a batching Writer holds (see Options.Batch).
func (w *Writer) Flush() error {
	if len(w.held) == 0 {
		return nil
	}
	err := w.write(w.held)
	w.held = w.held[:0]
	return err
}

func (w *Writer) write(b []byte) error {
	_, err := w.out.Write(b)
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) {
		return ErrClosedOutput
	}
	return err
}

// Line writes one already formatted text line.
func (w *Writer) Line(s string) error {
	w.line = append(w.line[:0], s...)
	return w.writeLine()
}

// JSON writes v as one JSON line.
func (w *Writer) JSON(v any) error { return w.writeJSON(v) }

// Format is the writer's format.
func (w *Writer) Format() Format { return w.format }

func (w *Writer) writeJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.line = append(w.line[:0], b...)
	return w.writeLine()
}
