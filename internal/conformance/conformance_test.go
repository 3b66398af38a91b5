package conformance

import (
	"os"
	"path/filepath"
	"testing"
)

// repoRoot is two levels up from this package.
var repoRoot = filepath.Join("..", "..")

func runDir(t *testing.T, dir string) {
	t.Helper()
	cases, err := LoadPath(dir)
	if err != nil {
		t.Fatalf("loading %s: %v", dir, err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			res := Run(c, NewEngineTarget())
			if !res.Pass {
				t.Fatal(res.Failure.Message)
			}
			if res.Steps != len(c.Steps) {
				t.Fatalf("ran %d of %d steps", res.Steps, len(c.Steps))
			}
		})
	}
}

// TestSharedCases runs the project's shared conformance cases (../shared/conformance
// next to the repository).
func TestSharedCases(t *testing.T) {
	dir := filepath.Join(repoRoot, "..", "shared", "conformance")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Skipf("no shared conformance cases at %s", dir)
	}
	runDir(t, dir)
}

// TestRepoCases runs the repository's own cases in testdata/conformance.
func TestRepoCases(t *testing.T) {
	runDir(t, filepath.Join(repoRoot, "testdata", "conformance"))
}
