package output

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// plainByte is what appendJSONString's loop copies without escaping, one
// byte at a time.
func plainByte(c byte) bool { return c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf }

// appendJSONString skips eight bytes at once where plain8 says none needs
// escaping, and looks at each alone otherwise: its output is the
// byte-at-a-time loop's exactly when plain8 never says yes to a word with
// a byte that loop would escape. Every byte value, at every position of a
// word, among plain and special neighbours.
func TestPlain8MatchesEachByte(t *testing.T) {
	special := []byte{0, 0x1f, 0x20, '"', '\\', '\n', 0x7f, 0x80, 0xbf, 0xc3, 0xe2, 0xff, 'a', '~', '!', '#', '[', ']', 0x21, 0x23, 0x5b, 0x5d}
	rng := rand.New(rand.NewPCG(21, 3))
	for n := range 200000 {
		var w [8]byte
		for i := range w {
			if rng.IntN(4) == 0 {
				w[i] = special[rng.IntN(len(special))]
			} else {
				w[i] = byte(0x20 + rng.IntN(0x5f))
			}
		}
		if n < 8*256 {
			w[n%8] = byte(n / 8) // every byte value at every position
		}
		want := true
		for _, c := range w {
			want = want && plainByte(c)
		}
		if got := plain8(string(w[:])); got != want {
			t.Fatalf("plain8(%q) = %v, want %v", w, got, want)
		}
	}
}

// What appendJSONString writes decodes back to the string (valid UTF-8;
// an invalid byte becomes U+FFFD), and escapes U+2028 and U+2029 for
// JavaScript readers of the lines.
func TestAppendJSONStringRoundTrips(t *testing.T) {
	for _, s := range []string{"", "plain ascii text longer than eight", "quote\" back\\slash\n\r\t\x00\x1f",
		"é and \u2028 and \u2029 in a line", "invalid \xff byte", strings.Repeat("abcdefg\"", 9)} {
		enc := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("%q encodes to %s, which does not decode: %v", s, enc, err)
		}
		if want := strings.ToValidUTF8(s, "\ufffd"); got != want {
			t.Errorf("%q encodes to %s, which decodes to %q", s, enc, got)
		}
		if strings.ContainsAny(string(enc), "\u2028\u2029") {
			t.Errorf("%q: %s leaves U+2028/U+2029 unescaped", s, enc)
		}
	}
}
