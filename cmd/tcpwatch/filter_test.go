package main

import "testing"

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{"10.1.2.3/16": "10.1.0.0/16", "fd00::5": "fd00::5/128", "10.0.0.1": "10.0.0.1/32"} {
		p, err := parsePrefix(in)
		if err != nil || p.String() != want {
			t.Errorf("parsePrefix(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, bad := range []string{"10.1.0.0/99", "", "host"} {
		if _, err := parsePrefix(bad); err == nil {
			t.Errorf("parsePrefix(%q) accepted", bad)
		}
	}
}
