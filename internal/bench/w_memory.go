package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Metric names of the memory and tree workloads.
const (
	mHeld            = "held_bytes"           // what holds the files' data after reading: XFS page cache; reflinkfs daemon cache + page cache
	mDaemonCached    = "daemon_cached_bytes"  // reflinkfs stats cached_bytes
	mPerFileCached   = "per_file_cached"      // reflinkfs stats per_file_cached_bytes: a per-file cache's equivalent
	mPageCache       = "page_cache_bytes"     // fincore over the files
	mRSSGrowth       = "daemon_rss_growth"    // VmRSS of the daemon after reading minus before
	mMeminfoCached   = "meminfo_cached_delta" // growth of /proc/meminfo Cached while this file system was read
	mReadAll         = "read_all"             // time to read every file
	mFileSize        = "file_size"            // the size of one file (or tree)
	mBackingCached   = "backing_cached_bytes" // reflinkfs stats passthrough.backing_cached_bytes
	seedMemory       = 303
	memoryReadBuffer = 1 << 20
)

// memoryOfClones: the original file and N clones of it, all read in full
// from cold caches; what is held in memory afterwards.
func (r *run) memoryOfClones(ctx context.Context) error {
	w := WorkloadMemory
	done, err := r.workDirs(w)
	defer done()
	if err != nil {
		return err
	}
	size := r.cfg.MemFileSize
	for _, t := range r.targets() {
		r.log.Printf("[memory] writing a %s file on %s", sizeLabel(size), t.name)
		if err := writeSequential(ctx, filepath.Join(t.dir(w), "src"), size, seedMemory); err != nil {
			return err
		}
	}
	for _, n := range r.cfg.MemClones {
		cs := fmt.Sprintf("N=%d", n)
		for i := 0; i < r.cfg.Runs; i++ {
			files := map[string][]string{}
			for _, t := range r.targets() {
				src := filepath.Join(t.dir(w), "src")
				files[t.key] = []string{src}
				for j := 1; j <= n; j++ {
					dst := filepath.Join(t.dir(w), fmt.Sprintf("clone%02d", j))
					if _, _, err := t.cloneFile(src, dst); err != nil {
						return err
					}
					files[t.key] = append(files[t.key], dst)
				}
			}
			if err := r.env.Cold(ctx); err != nil {
				return err
			}
			r.log.Printf("[memory] %s run %d/%d: reading %d files on each file system", cs, i+1, r.cfg.Runs, n+1)
			readFiles := func(t *target) error {
				for _, f := range files[t.key] {
					if err := ctx.Err(); err != nil {
						return err
					}
					if _, err := readFile(f, memoryReadBuffer); err != nil {
						return err
					}
				}
				return nil
			}
			if err := r.readAndMeasure(ctx, w, cs, float64(n), i, files, size, readFiles); err != nil {
				return err
			}
			for _, t := range r.targets() {
				for _, f := range files[t.key][1:] {
					if err := os.Remove(f); err != nil {
						return err
					}
				}
			}
			if err := r.syncAll(); err != nil {
				return err
			}
		}
	}
	return nil
}

// readAndMeasure runs read on each file system (caches must be cold; in
// the order of repetition i) and records the read time and what holds the
// data afterwards: page cache of files (fincore), the daemon's cache and
// RSS growth. unit is the size of one copy (file or tree), recorded so the
// report can give multiples of it.
func (r *run) readAndMeasure(ctx context.Context, w, cs string, x float64, i int, files map[string][]string, unit int64, read func(*target) error) error {
	pid := r.env.DaemonPID()
	rss0, err := processRSS(pid)
	if err != nil {
		return fmt.Errorf("daemon RSS: %w", err)
	}
	for _, t := range r.order(i) {
		cached0, err := meminfo("Cached")
		if err != nil {
			return err
		}
		elapsed, err := timeIt(func() error { return read(t) })
		if err != nil {
			return err
		}
		cached1, err := meminfo("Cached")
		if err != nil {
			return err
		}
		r.rec.AddDuration(w, mReadAll, cs, x, t.key, elapsed)
		r.rec.Add(w, mMeminfoCached, cs, x, t.key, unitBytes, float64(cached1-cached0))
	}
	rss1, err := processRSS(pid)
	if err != nil {
		return fmt.Errorf("daemon RSS: %w", err)
	}
	st, err := r.env.Stats(ctx)
	if err != nil {
		return err
	}
	xfsPages, err := fincoreBytes(ctx, files[fsXFS])
	if err != nil {
		return err
	}
	// Not fincore on reflinkfs: it maps each file, and a mapping of a
	// passthrough file shows the backing file's pages, so every clone
	// would count the same pages again. cachestat gives each FUSE inode's
	// own pages (none when reads were passed through); the backing files'
	// page cache comes from the daemon.
	rfsPages, err := cachedBytesSum(files[fsReflinkfs])
	if err != nil {
		return err
	}
	if st.Passthrough != nil {
		rfsPages += st.Passthrough.BackingCachedBytes
		r.rec.Add(w, mBackingCached, cs, x, fsReflinkfs, unitBytes, float64(st.Passthrough.BackingCachedBytes))
	}
	r.rec.Add(w, mHeld, cs, x, fsXFS, unitBytes, float64(xfsPages))
	r.rec.Add(w, mPageCache, cs, x, fsXFS, unitBytes, float64(xfsPages))
	r.rec.Add(w, mHeld, cs, x, fsReflinkfs, unitBytes, float64(st.CachedBytes+rfsPages))
	r.rec.Add(w, mDaemonCached, cs, x, fsReflinkfs, unitBytes, float64(st.CachedBytes))
	r.rec.Add(w, mPerFileCached, cs, x, fsReflinkfs, unitBytes, float64(st.PerFileCachedBytes))
	r.rec.Add(w, mPageCache, cs, x, fsReflinkfs, unitBytes, float64(rfsPages))
	r.rec.Add(w, mRSSGrowth, cs, x, fsReflinkfs, unitBytes, float64(rss1-rss0))
	for _, t := range r.targets() {
		r.rec.Add(w, mFileSize, cs, x, t.key, unitBytes, float64(unit))
	}
	return nil
}

// cachedBytesSum is the sum of cachedBytes over files.
func cachedBytesSum(files []string) (int64, error) {
	var total int64
	for _, f := range files {
		n, err := cachedBytes(f)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// timeIt returns how long fn took.
func timeIt(fn func() error) (d time.Duration, err error) {
	start := time.Now()
	err = fn()
	return time.Since(start), err
}
