package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Metric names of the clone workloads.
const (
	mExtents     = "extents"     // extent count of the source file
	mCloneCall   = "clone_call"  // FICLONE / copy_file_range loop alone
	mCloneWhole  = "clone_whole" // open src, create dst, clone, close both
	mUnlink      = "unlink"      // unlink(2) of the clone
	mDeleteSync  = "delete_sync" // unlink + sync of the file system
	seedClone    = 101
	seedFragment = 202
)

// cloneBySize: clone latency of contiguous files of several sizes.
func (r *run) cloneBySize(ctx context.Context) error {
	w := WorkloadClone
	done, err := r.workDirs(w)
	defer done()
	if err != nil {
		return err
	}
	for _, size := range r.cfg.CloneSizes {
		cs := sizeLabel(size)
		for _, t := range r.targets() {
			r.log.Printf("[clone] writing a %s file on %s", cs, t.name)
			if err := writeSequential(ctx, filepath.Join(t.dir(w), "src"), size, seedClone); err != nil {
				return err
			}
		}
		if err := r.timeClones(ctx, w, cs, float64(size), "src"); err != nil {
			return err
		}
		for _, t := range r.targets() {
			if err := os.Remove(filepath.Join(t.dir(w), "src")); err != nil {
				return err
			}
		}
	}
	return nil
}

// Layouts of the fragmented files.
const (
	// layoutRandom: every 4 KiB block written once, in random order. The
	// blocks are allocated in write order, so nearly every block is its own
	// extent, but together they fill one physical region.
	layoutRandom = "random"
	// layoutInterleaved: the same, alternating block by block with a second
	// file, so no two blocks of the file are physically adjacent: what a
	// file on an aged file system looks like.
	layoutInterleaved = "interleaved"
)

func fragCase(size int64, layout string) string { return sizeLabel(size) + " " + layout }

// cloneByExtents: clone and delete time of files with about one extent
// per 4 KiB block, in both layouts.
func (r *run) cloneByExtents(ctx context.Context) error {
	w := WorkloadExtents
	done, err := r.workDirs(w)
	defer done()
	if err != nil {
		return err
	}
	for _, layout := range []string{layoutRandom, layoutInterleaved} {
		for _, size := range r.cfg.FragSizes {
			cs := fragCase(size, layout)
			for _, t := range r.targets() {
				r.log.Printf("[extents] writing a %s file as random 4 KiB blocks (%s) on %s", sizeLabel(size), layout, t.name)
				src, filler := filepath.Join(t.dir(w), "src"), ""
				if layout == layoutInterleaved {
					filler = filepath.Join(t.dir(w), "filler")
				}
				if err := writeRandomBlocks(ctx, src, filler, size, seedFragment); err != nil {
					return err
				}
			}
			if err := r.timeClones(ctx, w, cs, 0, "src"); err != nil {
				return err
			}
			for _, t := range r.targets() {
				for _, name := range []string{"src", "filler"} {
					if err := os.Remove(filepath.Join(t.dir(w), name)); err != nil && !os.IsNotExist(err) {
						return err
					}
				}
				if err := t.settle(); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// timeClones counts src's extents on both file systems, then clones it
// and deletes the clone cfg.Runs times on each. x is the case's plot
// coordinate; 0 means "the extent count" (which differs per file system).
func (r *run) timeClones(ctx context.Context, w, cs string, x float64, name string) error {
	if err := r.syncAll(); err != nil {
		return err
	}
	xs := map[string]float64{}
	for _, t := range r.targets() {
		info, err := t.extents(ctx, filepath.Join(t.dir(w), name))
		if err != nil {
			return err
		}
		xs[t.key] = x
		if x == 0 {
			xs[t.key] = float64(info.Extents)
		}
		r.rec.Add(w, mExtents, cs, xs[t.key], t.key, unitCount, float64(info.Extents))
		r.log.Printf("[%s] %s: %d extents on %s", w, cs, info.Extents, t.name)
	}
	for i := 0; i < r.cfg.Runs; i++ {
		for _, t := range r.order(i) {
			if err := ctx.Err(); err != nil {
				return err
			}
			src, dst := filepath.Join(t.dir(w), name), filepath.Join(t.dir(w), "clone")
			if err := t.syncFS(); err != nil {
				return err
			}
			call, whole, err := t.cloneFile(src, dst)
			if err != nil {
				return err
			}
			if i == 0 && t.isReflinkfs() {
				if err := r.checkReflinked(ctx, t, dst); err != nil {
					return err
				}
			}
			if err := t.syncFS(); err != nil {
				return err
			}
			unlink, del, err := t.deleteFile(ctx, dst, w == WorkloadExtents)
			if err != nil {
				return err
			}
			r.rec.AddDuration(w, mCloneCall, cs, xs[t.key], t.key, call)
			r.rec.AddDuration(w, mCloneWhole, cs, xs[t.key], t.key, whole)
			r.rec.AddDuration(w, mUnlink, cs, xs[t.key], t.key, unlink)
			r.rec.AddDuration(w, mDeleteSync, cs, xs[t.key], t.key, del)
		}
		r.log.Printf("[%s] %s: run %d/%d: XFS %s, reflinkfs %s", w, cs, i+1, r.cfg.Runs,
			fmtSeconds(r.rec.Get(w, mCloneCall, cs, fsXFS).Samples[i]), fmtSeconds(r.rec.Get(w, mCloneCall, cs, fsReflinkfs).Samples[i]))
	}
	return nil
}

// checkReflinked verifies that copy_file_range shared the blocks rather
// than copying them (the kernel silently falls back to copying when a FUSE
// daemon does not serve COPY_FILE_RANGE).
func (r *run) checkReflinked(ctx context.Context, t *target, dst string) error {
	info, err := t.extents(ctx, dst)
	if err != nil {
		return err
	}
	fi, err := os.Stat(dst)
	if err != nil {
		return err
	}
	if info.SharedBytes != fi.Size() {
		return fmt.Errorf("%s: copy_file_range did not reflink: %d of %d bytes shared", dst, info.SharedBytes, fi.Size())
	}
	return nil
}
