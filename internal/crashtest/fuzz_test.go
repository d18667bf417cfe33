package crashtest

import (
	"context"
	"flag"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// An execution count, not a duration: with -fuzztime=3s a loaded machine
// sometimes ends the run with "context deadline exceeded" and no input,
// failing the test for nothing.
var fuzzTime = flag.String("crash.fuzztime", "3000x", "how long TestFuzzDecoders runs each decoder's fuzz target (go test -fuzztime: a duration or Nx)")

// Every on-disk decoder's fuzz target runs briefly (go test -fuzz), beyond
// replaying its committed corpus, which plain `go test` of its package
// does. A crash leaves the failing input in that package's testdata.
func TestFuzzDecoders(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ pkg, target string }{
		{"./internal/meta", "FuzzDecodeSuper"},
		{"./internal/meta", "FuzzDecodeInode"},
		{"./internal/meta", "FuzzDecodeRecords"},
		{"./internal/fusefs", "FuzzParseACL"},
	} {
		t.Run(c.target, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, goTool, "test", "-run", "^$", "-fuzz", "^"+c.target+"$", "-fuzztime", *fuzzTime, c.pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go test -fuzz %s %s: %v\n%s", c.target, c.pkg, err, out)
			}
		})
	}
}
