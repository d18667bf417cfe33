package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tests in this file run the real pipeline: root, /dev/fuse, xfsprogs,
// a loop device. They run only with REFLINKFS_BENCH_TEST=1 (benchmarks are
// not timed tests) and take a few minutes.

func requirePipeline(t *testing.T) {
	t.Helper()
	if os.Getenv("REFLINKFS_BENCH_TEST") != "1" {
		t.Skip("set REFLINKFS_BENCH_TEST=1 to run the benchmark pipeline")
	}
	AddSbinToPath()
	if err := CheckPrereqs(HostSystem()); err != nil {
		t.Fatal(err)
	}
}

// buildBinary builds cmd/reflinkfs into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	exe := filepath.Join(t.TempDir(), "reflinkfs")
	cmd := exec.Command("go", "build", "-o", exe, "./cmd/reflinkfs")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

// assertNothingLeft checks that no mount or loop device of a bench work
// directory under scratch remains, and that the work directory is gone.
func assertNothingLeft(t *testing.T, scratch string) {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mountPoints(string(mi)) {
		if strings.HasPrefix(mp, scratch+"/") {
			t.Errorf("mount left behind: %s", mp)
		}
	}
	out, err := exec.Command("losetup", "--list", "--noheadings", "--output", "BACK-FILE").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), scratch+"/") {
		t.Errorf("loop device left behind:\n%s", out)
	}
	left, _ := filepath.Glob(filepath.Join(scratch, "reflinkfs-bench-*"))
	if len(left) > 0 {
		t.Errorf("work directory left behind: %v", left)
	}
}

func TestQuickPipeline(t *testing.T) {
	requirePipeline(t)
	scratch, out := t.TempDir(), t.TempDir()
	cfg := DefaultConfig(true)
	cfg.Runs = 1
	cfg.Exe = buildBinary(t)
	cfg.ScratchDir, cfg.OutDir = scratch, out
	cfg.CommandLine = []string{"reflinkfs", "bench", "--quick", "--runs", "1"}
	var stdout, stderr bytes.Buffer
	cfg.Stdout, cfg.Stderr = &stdout, &stderr
	err := Run(context.Background(), cfg)
	assertNothingLeft(t, scratch)
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	tables := map[string]bool{}
	for _, tbl := range res.Tables {
		tables[tbl.Workload] = true
	}
	for _, w := range Workloads {
		if !tables[w] {
			t.Errorf("no table for %s", w)
		}
	}
	if len(res.Errors) > 0 {
		t.Errorf("errors: %v", res.Errors)
	}
	// The memory workload's point: reflinkfs holds one copy, XFS N+1.
	for _, m := range res.Metrics {
		if m.Workload == WorkloadMemory && m.Name == mHeld && m.Case == "N=8" {
			per := m.Median / float64(cfg.MemFileSize)
			if m.FS == fsReflinkfs && per > 1.05 {
				t.Errorf("reflinkfs holds %.2f× the file after reading 9 clones", per)
			}
			if m.FS == fsXFS && per < 8 {
				t.Errorf("XFS holds only %.2f× the file after reading 9 clones: is the page cache measured?", per)
			}
		}
	}
	// Mapped sharing: N processes mapping N clones hold one library on
	// reflinkfs (passthrough), N on XFS (exact, cachestat figures).
	for _, m := range res.Metrics {
		if m.Workload == WorkloadMapped && m.Name == mMapExact {
			per := m.Median / float64(cfg.MappedLibSize)
			if m.FS == fsReflinkfs && per > mappedSharingTarget {
				t.Errorf("%s: reflinkfs holds %.2f× the library", m.Case, per)
			}
			if m.FS == fsXFS && per < 0.9*m.X {
				t.Errorf("%s: XFS holds only %.2f× the library: is the page cache measured?", m.Case, per)
			}
		}
	}
	for _, p := range []string{"memory-vs-clones.png", "clone-vs-size.png", "clone-vs-extents.png", "read-throughput.png",
		"mapped-sharing.png", "read-clone.png"} {
		if _, err := os.Stat(filepath.Join(out, p)); err != nil {
			t.Errorf("plot: %v", err)
		}
	}
	if !strings.Contains(stdout.String(), "### Targets (DESIGN.md)") {
		t.Errorf("no targets section on stdout:\n%s", stdout.String())
	}
}

// An interrupted run must tear everything down and still write what it had.
func TestCancelledRunTearsDown(t *testing.T) {
	requirePipeline(t)
	scratch, out := t.TempDir(), t.TempDir()
	cfg := DefaultConfig(true)
	cfg.Runs = 5
	cfg.Exe = buildBinary(t)
	cfg.ScratchDir, cfg.OutDir = scratch, out
	cfg.Only = []string{WorkloadExtents}
	cfg.Stdout = &bytes.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	// Cancel once the workload is under way (the mounts exist).
	go func() {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			if m, _ := filepath.Glob(filepath.Join(scratch, "reflinkfs-bench-*", "reflinkfs", WorkloadExtents)); len(m) > 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Second)
		cancel()
	}()
	err := Run(ctx, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
	assertNothingLeft(t, scratch)
	if _, err := os.Stat(filepath.Join(out, "results.json")); err != nil {
		t.Errorf("no partial results: %v", err)
	}
}
