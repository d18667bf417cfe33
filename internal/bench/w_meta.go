package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Metric names of the metadata workload (all ops/s, except the syncs).
const (
	mCreate     = "create"      // open(O_CREAT|O_EXCL) + close of an empty file
	mCreateSync = "create_sync" // sync after all creates (s)
	mStatWarm   = "stat_warm"   // lstat right after creating
	mStatCold   = "stat_cold"   // lstat after cold caches (remount for reflinkfs)
	mUnlinkOps  = "unlink_ops"  // unlink
	mUnlinkSync = "unlink_sync" // sync after all unlinks (s)
	caseMeta    = "files"
	filesPerDir = 1000
)

// metadataOps: create, stat and unlink MetaFiles empty files spread over
// directories of 1000 files each.
func (r *run) metadataOps(ctx context.Context) error {
	w := WorkloadMetadata
	done, err := r.workDirs(w)
	defer done()
	if err != nil {
		return err
	}
	n := r.cfg.MetaFiles
	dirs := max(1, (n+filesPerDir-1)/filesPerDir)
	for i := 0; i < r.cfg.Runs; i++ {
		for _, t := range r.order(i) {
			base := filepath.Join(t.dir(w), fmt.Sprintf("run%d", i))
			paths := make([]string, 0, n)
			for d := 0; d < dirs; d++ {
				dir := filepath.Join(base, fmt.Sprintf("d%03d", d))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				for f := 0; f < filesPerDir && len(paths) < n; f++ {
					paths = append(paths, filepath.Join(dir, fmt.Sprintf("file%04d", f)))
				}
			}
			if err := t.syncFS(); err != nil {
				return err
			}
			rate := func(name string, op func(string) error) error {
				start := time.Now()
				for j, p := range paths {
					if j%4096 == 0 {
						if err := ctx.Err(); err != nil {
							return err
						}
					}
					if err := op(p); err != nil {
						return &os.PathError{Op: name, Path: p, Err: err}
					}
				}
				r.rec.Add(w, name, caseMeta, 0, t.key, unitOPS, float64(len(paths))/time.Since(start).Seconds())
				return nil
			}
			sync := func(name string, syncFn func() error) error {
				start := time.Now()
				if err := syncFn(); err != nil {
					return err
				}
				r.rec.AddDuration(w, name, caseMeta, 0, t.key, time.Since(start))
				return nil
			}
			if err := rate(mCreate, createEmpty); err != nil {
				return err
			}
			if err := sync(mCreateSync, t.syncFS); err != nil {
				return err
			}
			if err := rate(mStatWarm, lstat); err != nil {
				return err
			}
			if err := t.cold(ctx); err != nil {
				return err
			}
			if err := rate(mStatCold, lstat); err != nil {
				return err
			}
			if err := rate(mUnlinkOps, unix.Unlink); err != nil {
				return err
			}
			if err := sync(mUnlinkSync, t.settle); err != nil {
				return err
			}
			if err := os.RemoveAll(base); err != nil {
				return err
			}
		}
		r.log.Printf("[metadata] run %d/%d: creates XFS %s, reflinkfs %s", i+1, r.cfg.Runs,
			fmtValue(unitOPS, lastSample(r.rec.Get(w, mCreate, caseMeta, fsXFS))),
			fmtValue(unitOPS, lastSample(r.rec.Get(w, mCreate, caseMeta, fsReflinkfs))))
	}
	return nil
}

func createEmpty(path string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func lstat(path string) error {
	var st unix.Stat_t
	return unix.Lstat(path, &st)
}
