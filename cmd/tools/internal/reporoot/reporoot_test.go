package reporoot

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFindStopsAtTheProductModule(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// This package sits in the tools module, whose go.mod is not the
	// product's: the root is four directories further up.
	root, err := Find(wd)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Clean(filepath.Join(wd, "..", "..", "..", "..")); root != want {
		t.Errorf("Find(%s) = %s, want %s", wd, root, want)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "tcpwatch")); err != nil {
		t.Errorf("the root found has no cmd/tcpwatch: %v", err)
	}
	if _, err := Find(t.TempDir()); err == nil {
		t.Error("Find outside the tree found a root")
	}
}

func TestModulePath(t *testing.T) {
	for gomod, want := range map[string]string{
		"module github.com/tcpwatch/tcpwatch\n\ngo 1.26\n":          Module,
		"// x\nmodule \"github.com/tcpwatch/tcpwatch/cmd/tools\"\n": Module + "/cmd/tools",
		"go 1.26\n": "",
	} {
		if got := modulePath([]byte(gomod)); got != want {
			t.Errorf("modulePath(%q) = %q, want %q", gomod, got, want)
		}
	}
}
