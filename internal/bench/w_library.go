package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Metric names of the library workload (fs = "library").
const (
	mLibCached  = "cached"
	mLibPerFile = "per_file_cached"
	mLibRead    = "read_all"
)

// LibraryFlag is the hidden flag of `reflinkfs bench` that runs only
// internal/enginebench in a scratch directory and prints its tables; the
// library workload runs the binary that way.
const LibraryFlag = "enginebench-dir"

// library runs internal/enginebench (the engine through its Go API, no
// FUSE, no XFS) in a child process and keeps its tables. A child, because
// a fatal error inside the engine would otherwise kill the harness before
// it unmounts anything, and so the engine's cache memory is not ours.
// enginebench prints text only, so its figures are parsed back; they are
// medians without their samples.
func (r *run) library(ctx context.Context) error {
	dir := filepath.Join(r.env.Work, "library")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	args := []string{"bench", "--" + LibraryFlag, dir, "--runs", strconv.Itoa(r.cfg.Runs)}
	if r.cfg.Quick {
		args = append(args, "--quick")
	}
	r.log.Printf("[library] %s %s", r.cfg.Exe, strings.Join(args, " "))
	out, runErr := runCmd(ctx, r.cfg.Exe, args...)
	r.libText = out
	lt, err := parseLibraryTables(out)
	if err != nil {
		if runErr != nil {
			return runErr
		}
		return err
	}
	if runErr != nil {
		// The tables are complete; the child failed afterwards (closing).
		r.note("enginebench printed its tables but then failed: %s", firstLine(runErr.Error()))
	}
	w := WorkloadLibrary
	for _, c := range lt.Clone {
		cs := sizeLabel(c.Size)
		r.rec.Add(w, mExtents, cs, float64(c.Size), fsLibrary, unitCount, float64(c.Extents))
		r.rec.AddDuration(w, mCloneCall, cs, float64(c.Size), fsLibrary, c.Clone)
		r.rec.AddDuration(w, mUnlink, cs, float64(c.Size), fsLibrary, c.Delete)
	}
	for _, c := range lt.Frag {
		cs := sizeLabel(c.Size) + " random overwrites"
		r.rec.Add(w, mExtents, cs, float64(c.Extents), fsLibrary, unitCount, float64(c.Extents))
		r.rec.AddDuration(w, mCloneCall, cs, float64(c.Extents), fsLibrary, c.Clone)
		r.rec.AddDuration(w, mUnlink, cs, float64(c.Extents), fsLibrary, c.Delete)
	}
	for _, m := range lt.Memory {
		cs := fmt.Sprintf("%d files", m.N)
		r.rec.Add(w, mLibCached, cs, float64(m.N), fsLibrary, unitBytes, float64(m.Cached))
		r.rec.Add(w, mLibPerFile, cs, float64(m.N), fsLibrary, unitBytes, float64(m.PerFile))
		r.rec.AddDuration(w, mLibRead, cs, float64(m.N), fsLibrary, m.ReadTime)
	}
	return nil
}

// firstLine returns s up to its first newline, capped at 300 bytes.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
