package main

import (
	"bytes"
	"strings"
	"testing"
)

// Bad pipeline flags and OTLP settings are one line and exit 2, before
// anything is loaded.
func TestPipelineFlagsBad(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--schema", "v3"}, "", "unknown --schema"},
		{[]string{"--community-id-seed", "65536"}, "", "community-id-seed"},
		{[]string{"--community-id-seed", "-1"}, "", "community-id-seed"},
		{[]string{"--otlp", "collector:4317"}, "", "not a collector URL"},
		{[]string{"--otlp", "ftp://collector:4317"}, "", "not a collector URL"},
		{[]string{"--otlp", "http://"}, "", "not a collector URL"},
		{[]string{"--otlp", "http://localhost:4318"}, "OTEL_EXPORTER_OTLP_PROTOCOL=http/json", "grpc and http/protobuf"},
		{[]string{"--otlp", "http://localhost:4318"}, "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=thrift", "grpc and http/protobuf"},
	} {
		var stderr bytes.Buffer
		cmd := tcpwatch(t, tc.args...)
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		cmd.Stderr = &stderr
		cmd.Run()
		first, _, _ := strings.Cut(stderr.String(), "\n")
		if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.HasPrefix(first, "tcpwatch: ") || !strings.Contains(first, tc.want) {
			t.Errorf("%v %s: exit %d, %q; want exit 2 and %q", tc.args, tc.env, code, first, tc.want)
		}
	}
}
