package output

import (
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// appendJSONString, eight bytes at a time where nothing needs escaping,
// writes what it wrote one byte at a time (appendJSONStringBytewise), for
// strings of every byte that matters at every position of a word.
func TestAppendJSONStringMatchesBytewise(t *testing.T) {
	special := []byte{0, 0x1f, 0x20, '"', '\\', '\n', '\r', '\t', 0x7f, 0x80, 0xbf, 0xc3, 0xa9, 0xe2, 0x80, 0xa8, 0xff, 'a', '~', '!', '#', '[', ']', '<', 0x21, 0x23, 0x5b, 0x5d}
	rng := rand.New(rand.NewPCG(21, 3))
	for n := range 200000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			if rng.IntN(4) == 0 {
				b[i] = special[rng.IntN(len(special))]
			} else {
				b[i] = byte(0x20 + rng.IntN(0x5f))
			}
		}
		if n%3 == 0 {
			b = append(b, "é\u2028x"...)
		}
		s := string(b)
		if got, want := string(appendJSONString(nil, s)), string(appendJSONStringBytewise(nil, s)); got != want {
			t.Fatalf("%q: %s, want %s", s, got, want)
		}
	}
	for c := range 256 {
		s := "abcdefgh"[:c%8] + string(rune(0)) + "abcdefgh"
		s = s[:c%8] + string([]byte{byte(c)}) + s[c%8+1:]
		if got, want := string(appendJSONString(nil, s)), string(appendJSONStringBytewise(nil, s)); got != want {
			t.Fatalf("byte %#x: %s, want %s", c, got, want)
		}
	}
}

// appendJSONStringBytewise is appendJSONString as it was, one byte at a time.
func appendJSONStringBytewise(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func BenchmarkAppendJSONString(b *testing.B) {
	s := "a new connection took over 127.0.0.1:47311 > 127.0.0.1:40312, which this side held in TIME_WAIT (closed 2.3s ago)"
	buf := make([]byte, 0, 256)
	b.Run("words", func(b *testing.B) {
		for b.Loop() {
			buf = appendJSONString(buf[:0], s)
		}
	})
	b.Run("bytewise", func(b *testing.B) {
		for b.Loop() {
			buf = appendJSONStringBytewise(buf[:0], s)
		}
	})
}
