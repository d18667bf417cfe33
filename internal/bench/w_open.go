package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Metric names of the first-open workload.
const (
	mFirstOpen = "first_open" // open(2) of a never-opened clone: on reflinkfs it makes the backing snapshot
	mLaterOpen = "later_open" // open(2) of the same file again, after closing it
	seedOpen   = 606
	laterOpens = 5 // later opens timed per sample
)

// firstOpen: open(2), read-only, of a clone no one has opened (on
// reflinkfs with passthrough: the open that takes the snapshot and
// registers the backing file), against later opens of the same file.
// On reflinkfs every sample remounts first, so that no backing of the
// content survives from the sample before (an unused backing is kept
// 10 s); the clone's path is looked up (stat) before the timed open.
func (r *run) firstOpen(ctx context.Context) error {
	w := WorkloadOpen
	done, err := r.workDirs(w)
	defer done()
	if err != nil {
		return err
	}
	vs := r.shareVariants()
	for _, size := range r.cfg.OpenSizes {
		cs := sizeLabel(size)
		for _, t := range r.targets() {
			r.log.Printf("[firstopen] writing a %s file on %s", cs, t.name)
			if err := writeSequential(ctx, filepath.Join(t.dir(w), "src"), size, seedOpen); err != nil {
				return err
			}
		}
		for i := 0; i < r.cfg.Runs; i++ {
			for _, v := range rotate(vs, i) {
				if err := ctx.Err(); err != nil {
					return err
				}
				clone := filepath.Join(v.t.dir(w), fmt.Sprintf("clone-%s-%d", v.key, i))
				if _, _, err := v.t.cloneFile(filepath.Join(v.t.dir(w), "src"), clone); err != nil {
					return err
				}
				if v.t.isReflinkfs() {
					// A fresh daemon holds no backing file of this content.
					if err := v.t.syncFS(); err != nil {
						return err
					}
					remounted, err := r.env.Share(ctx, v.share)
					if err != nil {
						return err
					}
					if !remounted {
						if err := r.env.Remount(ctx); err != nil {
							return err
						}
					}
				}
				var st0, st1 int64
				if v.key == fsReflinkfs {
					if st0, err = r.backingsCreated(ctx); err != nil {
						return err
					}
				}
				first, later, err := timeOpens(clone, laterOpens)
				if err != nil {
					return err
				}
				if v.key == fsReflinkfs {
					if st1, err = r.backingsCreated(ctx); err != nil {
						return err
					}
					if st1 != st0+1 {
						r.note("firstopen %s run %d: the first open of a clone made %d backing files, not 1.", cs, i+1, st1-st0)
					}
				}
				r.rec.AddDuration(w, mFirstOpen, cs, float64(size), v.key, first)
				for _, d := range later {
					r.rec.AddDuration(w, mLaterOpen, cs, float64(size), v.key, d)
				}
				if err := os.Remove(clone); err != nil {
					return err
				}
			}
			r.log.Printf("[firstopen] %s run %d/%d: first open XFS %s, reflinkfs %s, share=off %s", cs, i+1, r.cfg.Runs,
				fmtSeconds(lastSample(r.rec.Get(w, mFirstOpen, cs, fsXFS))),
				fmtSeconds(lastSample(r.rec.Get(w, mFirstOpen, cs, fsReflinkfs))),
				fmtSeconds(lastSample(r.rec.Get(w, mFirstOpen, cs, fsReflinkfsOff))))
		}
		for _, t := range r.targets() {
			if err := os.Remove(filepath.Join(t.dir(w), "src")); err != nil {
				return err
			}
		}
		if err := r.syncAll(); err != nil {
			return err
		}
	}
	return nil
}

// backingsCreated is the daemon's count of backing files made so far.
func (r *run) backingsCreated(ctx context.Context) (int64, error) {
	st, err := r.env.Stats(ctx)
	if err != nil {
		return 0, err
	}
	if st.Passthrough == nil {
		return 0, nil
	}
	return st.Passthrough.BackingsCreated, nil
}

// timeOpens stats path (so the timed opens find the lookup cached), then
// times a read-only open(2) of it, closes it, and times n more opens,
// each closed before the next. Closing is not timed.
func timeOpens(path string, n int) (first time.Duration, later []time.Duration, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	open := func() (time.Duration, error) {
		start := time.Now()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		d := time.Since(start)
		if err != nil {
			return 0, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return d, unix.Close(fd)
	}
	if first, err = open(); err != nil {
		return 0, nil, err
	}
	for range n {
		d, err := open()
		if err != nil {
			return 0, nil, err
		}
		later = append(later, d)
	}
	return first, later, nil
}
