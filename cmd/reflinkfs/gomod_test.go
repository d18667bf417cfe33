package main

import (
	"os/exec"
	"testing"
)

// TestGoModTidy keeps go.mod honest: direct dependencies listed as direct,
// nothing missing or unused (go mod tidy would change nothing).
func TestGoModTidy(t *testing.T) {
	cmd := exec.Command("go", "mod", "tidy", "-diff")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go mod tidy -diff: %v: go.mod or go.sum is not tidy; run 'go mod tidy'\n%s", err, out)
	}
}
