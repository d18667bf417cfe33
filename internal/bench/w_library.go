package bench

import (
	"bytes"
	"context"
	"fmt"

	"github.com/reflinkfs/reflinkfs/internal/enginebench"
)

// Metric names of the library workload (fs = "library").
const (
	mLibCached  = "cached"
	mLibPerFile = "per_file_cached"
	mLibRead    = "read_all"
)

// library runs internal/enginebench (the engine through its Go API, no
// FUSE, no XFS) in this process and keeps its tables. enginebench prints
// text only, so its figures are parsed back; they are medians without
// their samples.
func (r *run) library(ctx context.Context) error {
	var out bytes.Buffer
	ecfg := enginebench.Full(r.env.Work, &out)
	if r.cfg.Quick {
		ecfg = enginebench.Quick(r.env.Work, &out)
	}
	ecfg.Runs = r.cfg.Runs
	r.log.Printf("[library] enginebench (%s) in %s", r.cfg.mode(), r.env.Work)
	err := enginebench.Run(ecfg)
	r.libText = out.String()
	if err != nil {
		return fmt.Errorf("enginebench: %w", err)
	}
	lt, err := parseLibraryTables(r.libText)
	if err != nil {
		return err
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
	return ctx.Err()
}
