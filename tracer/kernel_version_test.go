package tracer

import "testing"

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		release string
		less    bool
	}{{"5.10.0-33-amd64", true}, {"5.15.0", true}, {"6.1.0-56-amd64", false}, {"6.12.95+deb12-amd64", false}, {"7.3.4+deb13-amd64", false}, {"6.0.9", true}} {
		if got := versionLess(tc.release, MinKernel); got != tc.less {
			t.Errorf("versionLess(%q, %s) = %v", tc.release, MinKernel, got)
		}
	}
}
