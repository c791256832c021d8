package wire

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"
)

// Recordings keep kernel events as they came from the ring buffer, one hex
// record per line, so a scenario captured on a real kernel can be replayed
// through the tracker in tests. Lines starting with # are comments.

// recordSizeBeforeWindow is the size of struct event before snd_wnd,
// notsent_bytes and drops were appended (issue 19): recordings made then
// stay readable.
const recordSizeBeforeWindow = 176

// recordSizeBeforeThread is its size before thread was appended (issue 17).
const recordSizeBeforeThread = 192

// WriteRecord appends ev to a recording.
func WriteRecord(w io.Writer, ev *Event) error {
	_, err := fmt.Fprintf(w, "%s\n", hex.EncodeToString(Encode(ev)))
	return err
}

// ReadRecording decodes a recording, with wall times anchored at epoch.
func ReadRecording(r io.Reader, epoch time.Time) ([]Event, error) {
	var out []Event
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	clock := Clock{wallAtZero: epoch}
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		raw, err := hex.DecodeString(text)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		var ev Event
		if err := Decode(raw, clock, &ev); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, ev)
	}
	return out, sc.Err()
}
