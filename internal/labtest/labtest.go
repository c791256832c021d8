// Package labtest builds throw-away networks for privileged tests: two
// hosts (network namespaces) joined by a cable, removed when the test ends.
package labtest

import (
	"testing"

	"github.com/tcpwatch/tcpwatch/lab/netlab"
)

// Pair returns hosts a and b joined by a cable.
func Pair(tb testing.TB) (a, b *netlab.Host) {
	tb.Helper()
	l, err := netlab.New()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	if a, err = l.AddHost("a"); err != nil {
		tb.Fatal(err)
	}
	if b, err = l.AddHost("b"); err != nil {
		tb.Fatal(err)
	}
	if _, err := l.Cable(a, b, netlab.CableOptions{}); err != nil {
		tb.Fatal(err)
	}
	return a, b
}
