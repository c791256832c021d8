// Package output renders tcpwatch's events and narratives: text for a person
// at a terminal, JSON lines for log pipelines.
package output

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sanitize makes a string from the kernel or another process (a comm, a
// path) safe to print on a terminal: control characters, escape sequences
// and invalid UTF-8 become visible \x.. escapes instead of acting.
func Sanitize(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unsafeRune(r) || r == '\\' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			b.WriteString(`\x`)
			b.WriteByte("0123456789abcdef"[s[i]>>4])
			b.WriteByte("0123456789abcdef"[s[i]&0xf])
		case r == '\\':
			b.WriteString(`\\`)
		case unsafeRune(r):
			if r < 0x100 {
				b.WriteString(`\x`)
				b.WriteByte("0123456789abcdef"[r>>4])
				b.WriteByte("0123456789abcdef"[r&0xf])
			} else {
				b.WriteString(`\u`)
				for shift := 12; shift >= 0; shift -= 4 {
					b.WriteByte("0123456789abcdef"[(r>>shift)&0xf])
				}
			}
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// unsafeRune: control characters act on a terminal; format characters
// (bidi overrides, zero-width joiners) can make a line lie about itself.
func unsafeRune(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }

// SanitizeValue is Sanitize for a value in a `key=value` text field: a
// value with a space, '=' or '"' is quoted, so a process named
// `x pid=1 comm=y` cannot forge fields of its own.
func SanitizeValue(s string) string {
	s = Sanitize(s)
	if s != "" && !strings.ContainsAny(s, " =\"") {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}

// appendOwner appends " pid=N comm=NAME" when the owner is known.
func appendOwner(b []byte, pid uint32, comm, thread string) []byte {
	if pid == 0 {
		return b
	}
	b = append(b, " pid="...)
	b = strconv.AppendUint(b, uint64(pid), 10)
	b = append(b, " comm="...)
	b = append(b, SanitizeValue(comm)...)
	if thread != "" {
		b = append(b, " thread="...)
		b = append(b, SanitizeValue(thread)...)
	}
	return b
}
