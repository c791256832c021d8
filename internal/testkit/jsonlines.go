package testkit

import (
	"encoding/json"
	"strings"
)

// JSONLines decodes tcpwatch's JSON lines (-o json) into T, one value a
// line, and keeps those keep accepts (nil keeps all). Lines that are not
// a JSON object for T (stderr mixed in, a line cut by a kill) are
// skipped: the tests check what was told, not how the output ended.
func JSONLines[T any](text string, keep func(T) bool) []T {
	var out []T
	for _, line := range strings.Split(text, "\n") {
		var v T
		if json.Unmarshal([]byte(line), &v) != nil {
			continue
		}
		if keep == nil || keep(v) {
			out = append(out, v)
		}
	}
	return out
}
