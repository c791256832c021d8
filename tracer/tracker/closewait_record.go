package tracker

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// A recording (wire.WriteRecord, lab --record) holds the kernel's records;
// close_wait_stuck also needs the scans that found the stuck sockets, so
// they are written among the records as comment lines, which
// wire.ReadRecording skips:
//
//	# close-wait-scan {"mono":..., "stuck":[...]}
const closeWaitScanPrefix = "# close-wait-scan "

// RecordedScan is one close-wait scan of a recording.
type RecordedScan struct {
	Mono  time.Duration     `json:"mono"`
	Stuck []CloseWaitSocket `json:"stuck"`
}

// WriteCloseWaitScan writes a scan read at mono into a recording.
func WriteCloseWaitScan(w io.Writer, mono time.Duration, stuck []CloseWaitSocket) error {
	b, err := json.Marshal(RecordedScan{Mono: mono, Stuck: stuck})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s%s\n", closeWaitScanPrefix, b)
	return err
}

// ReadCloseWaitScans returns the scans of a recording, in order.
func ReadCloseWaitScans(raw []byte) ([]RecordedScan, error) {
	var out []RecordedScan
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text, ok := strings.CutPrefix(sc.Text(), closeWaitScanPrefix)
		if !ok {
			continue
		}
		var s RecordedScan
		if err := json.Unmarshal([]byte(text), &s); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, s)
	}
	return out, sc.Err()
}
