package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// Metric names and cases of the copy-on-write workload.
const (
	mCoWWrite   = "overwrite_write" // the writes
	mCoWFsync   = "overwrite_fsync" // the fsync after them
	mCoWTotal   = "overwrite_total" // both
	mCoWRatio   = "shared_over_unshared"
	mCoWExtents = "extents_after"
	caseShared  = "shared (fresh clone)"
	caseUnshare = "unshared"
	caseRatio   = "shared / unshared"
	seedCoW     = 505
)

// cowOverwrites: random 4 KiB overwrites of a freshly cloned file (every
// block shared) and of an unshared file of the same size, fsync at the
// end. The same offsets are written on both file systems.
func (r *run) cowOverwrites(ctx context.Context) error {
	w := WorkloadCoW
	done, err := r.workDirs(w)
	defer done()
	if err != nil {
		return err
	}
	size := r.cfg.CoWFileSize
	offsets := randomBlockOffsets(r.cfg.CoWWrites, size, seedCoW)
	for _, t := range r.targets() {
		r.log.Printf("[cow] writing a %s file on %s", sizeLabel(size), t.name)
		if err := writeSequential(ctx, filepath.Join(t.dir(w), "src"), size, seedCoW); err != nil {
			return err
		}
	}
	for i := 0; i < r.cfg.Runs; i++ {
		for _, t := range r.order(i) {
			cases := []string{caseShared, caseUnshare}
			if i%2 == 1 {
				cases = []string{caseUnshare, caseShared}
			}
			totals := map[string]time.Duration{}
			for _, c := range cases {
				if err := ctx.Err(); err != nil {
					return err
				}
				path := filepath.Join(t.dir(w), "target")
				if c == caseShared {
					if _, _, err := t.cloneFile(filepath.Join(t.dir(w), "src"), path); err != nil {
						return err
					}
				} else if err := writeSequential(ctx, path, size, seedCoW+uint64(i)+1); err != nil {
					return err
				}
				if err := t.syncFS(); err != nil {
					return err
				}
				write, fsync, err := overwriteBlocks(ctx, path, offsets, seedCoW*7+uint64(i))
				if err != nil {
					return err
				}
				totals[c] = write + fsync
				r.rec.AddDuration(w, mCoWWrite, c, 0, t.key, write)
				r.rec.AddDuration(w, mCoWFsync, c, 0, t.key, fsync)
				r.rec.AddDuration(w, mCoWTotal, c, 0, t.key, write+fsync)
				if i == 0 {
					info, err := t.extents(ctx, path)
					if err != nil {
						return err
					}
					r.rec.Add(w, mCoWExtents, c, 0, t.key, unitCount, float64(info.Extents))
				}
				if _, _, err := t.deleteFile(ctx, path, true); err != nil {
					return err
				}
			}
			// The ratio of this repetition, both halves measured back to back.
			r.rec.Add(w, mCoWRatio, caseRatio, 0, t.key, unitRatio, totals[caseShared].Seconds()/totals[caseUnshare].Seconds())
		}
		r.log.Printf("[cow] run %d/%d: shared/unshared XFS %s, reflinkfs %s", i+1, r.cfg.Runs,
			fmtRatio(lastSample(r.rec.Get(w, mCoWRatio, caseRatio, fsXFS))),
			fmtRatio(lastSample(r.rec.Get(w, mCoWRatio, caseRatio, fsReflinkfs))))
	}
	return nil
}

// cowCaseLabel names the workload's case in tables.
func cowCaseLabel(writes int, size int64) string {
	return fmt.Sprintf("%d random 4 KiB overwrites of a %s file, then fsync", writes, sizeLabel(size))
}
