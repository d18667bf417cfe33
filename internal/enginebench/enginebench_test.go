package enginebench

import (
	"os"
	"testing"
)

// TestQuickRuns runs a tiny configuration so the benchmark code cannot rot.
func TestQuickRuns(t *testing.T) {
	cfg := Config{Dir: t.TempDir(), Sizes: []int64{4 << 20}, FragSize: 4 << 20, FragExtents: 200,
		Clones: []int{1, 2}, CloneSize: 2 << 20, Runs: 3, CacheSize: 8 << 20, Out: os.Stdout}
	if testing.Verbose() == false {
		cfg.Out = nopWriter{}
	}
	if err := Run(cfg); err != nil {
		t.Fatal(err)
	}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
