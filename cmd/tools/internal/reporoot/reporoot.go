// Package reporoot puts a tool in the tcpwatch tree it measures.
//
// The tools are a module of their own (cmd/tools), so `make` runs them
// with `go run -C cmd/tools`; yet they build ./cmd/tcpwatch, list the
// product's test packages and write docs/ by paths relative to the
// product's root. Chdir makes those paths mean the same wherever a tool
// is started inside the tree.
package reporoot

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Module is the product's module path: its go.mod marks the root.
const Module = "github.com/tcpwatch/tcpwatch"

// Find returns the nearest directory at or above dir whose go.mod
// declares Module.
func Find(dir string) (string, error) {
	start := dir
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(data) == Module {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s is not inside the tcpwatch tree (no go.mod of %s at or above it)", start, Module)
		}
		dir = parent
	}
}

// Chdir moves the process to the root of the tcpwatch tree that holds
// the working directory.
func Chdir() error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root, err := Find(wd)
	if err != nil {
		return err
	}
	return os.Chdir(root)
}

// modulePath is the path of go.mod's module directive ("" if none).
func modulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}
