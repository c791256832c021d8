package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// flagName is a long flag at the start of a line of --help, or of a row
// of the README's flags table ("| `-o, --output text\|json` |").
var (
	helpFlag  = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9-]+)`)
	tableFlag = regexp.MustCompile("^\\| `(?:-\\w, )?--([a-z0-9-]+)")
)

// TestREADMEFlagsTable: the README's flags table lists exactly the flags
// tcpwatch accepts.
func TestREADMEFlagsTable(t *testing.T) {
	var help bytes.Buffer
	if _, _, err := parseFlags([]string{"--help"}, &help); err == nil {
		t.Fatal("--help parsed as a run")
	}
	var accepted []string
	for _, line := range strings.Split(help.String(), "\n") {
		if m := helpFlag.FindStringSubmatch(line); m != nil {
			accepted = append(accepted, m[1])
		}
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// The table under the header "| flag | meaning |", to its last row.
	table := string(readme)
	i := strings.Index(table, "\n| flag | meaning |\n")
	if i < 0 {
		t.Fatal(`README.md has no table headed "| flag | meaning |"`)
	}
	var documented []string
	for _, line := range strings.Split(table[i+1:], "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		if m := tableFlag.FindStringSubmatch(line); m != nil {
			documented = append(documented, m[1])
		} else {
			t.Errorf("a row of the README's flags table names no flag: %s", line)
		}
	}
	sort.Strings(accepted)
	sort.Strings(documented)
	if len(accepted) < 10 {
		t.Fatalf("found only %d flags in --help: %q", len(accepted), help.String())
	}
	if strings.Join(accepted, " ") != strings.Join(documented, " ") {
		t.Errorf("the README's flags table differs from tcpwatch --help:\n  --help: %v\n  README: %v", accepted, documented)
	}
}

// TestREADMECommands: every command of tcpwatch's usage is in the
// README's list of commands.
func TestREADMECommands(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	head, _, ok := strings.Cut(usage, "\nFlags:")
	if !ok {
		t.Fatal("the usage has no Flags: line")
	}
	commands := 0
	for _, line := range strings.Split(head, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "tcpwatch ") {
			continue
		}
		// The command is what comes before the column of its meaning;
		// "lab ..." stands for the lab's own commands.
		cmd, _, _ := strings.Cut(line, "  ")
		cmd = strings.TrimSuffix(cmd, "...")
		commands++
		if !strings.Contains(string(readme), "\n"+cmd) {
			t.Errorf("the README's list of commands lacks %q", cmd)
		}
	}
	if commands < 4 {
		t.Fatalf("found only %d commands in the usage", commands)
	}
}
