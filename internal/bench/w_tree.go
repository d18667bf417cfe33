package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Metric names of the tree workload.
const (
	mTreeCreate   = "create_tree" // writing the original tree, with sync
	mTreeClone    = "clone_tree"  // one clone of the tree (cp -a --reflink=always / reflinkfs clone -r)
	mTreeCloneAll = "clone_all"   // all copies, then sync
	mTreeDelete   = "delete_all"  // rm -r of all copies, then sync
	mTreeFiles    = "files"
	caseTree      = "tree"
	seedTree      = 606
)

// smallFilesTree: a container-root-like tree of small files, cloned
// TreeCopies times as a tree; then every copy is read from cold caches.
func (r *run) smallFilesTree(ctx context.Context) error {
	w := WorkloadTree
	done, err := r.workDirs(w)
	defer done()
	if err != nil {
		return err
	}
	var info treeInfo
	for _, t := range r.targets() {
		r.log.Printf("[tree] creating a tree of %d files on %s", r.cfg.TreeFiles, t.name)
		start := time.Now()
		if info, err = makeTree(ctx, filepath.Join(t.dir(w), "src"), r.cfg.TreeFiles, seedTree); err != nil {
			return err
		}
		if err := t.syncFS(); err != nil {
			return err
		}
		r.rec.AddDuration(w, mTreeCreate, caseTree, 0, t.key, time.Since(start))
		r.rec.Add(w, mTreeFiles, caseTree, 0, t.key, unitCount, float64(info.Files))
	}
	r.log.Printf("[tree] %d files (%s), %d directories, %d symlinks per tree", info.Files, fmtBytes(float64(info.Bytes)), info.Dirs, info.Symlinks)
	copies := r.cfg.TreeCopies
	for i := 0; i < r.cfg.Runs; i++ {
		files := map[string][]string{}
		for _, t := range r.order(i) {
			start := time.Now()
			for c := 1; c <= copies; c++ {
				if err := ctx.Err(); err != nil {
					return err
				}
				dst := filepath.Join(t.dir(w), fmt.Sprintf("copy%d", c))
				d, err := t.cloneTree(ctx, filepath.Join(t.dir(w), "src"), dst)
				if err != nil {
					return err
				}
				r.rec.AddDuration(w, mTreeClone, caseTree, 0, t.key, d)
				fs, err := regularFiles(dst)
				if err != nil {
					return err
				}
				if len(fs) != info.Files {
					return fmt.Errorf("%s: %d files after cloning, want %d", dst, len(fs), info.Files)
				}
				files[t.key] = append(files[t.key], fs...)
			}
			if err := t.syncFS(); err != nil {
				return err
			}
			r.rec.AddDuration(w, mTreeCloneAll, caseTree, 0, t.key, time.Since(start))
		}
		if err := r.env.Cold(ctx); err != nil {
			return err
		}
		r.log.Printf("[tree] run %d/%d: reading %d copies on each file system", i+1, r.cfg.Runs, copies)
		readCopies := func(t *target) error {
			for c := 1; c <= copies; c++ {
				if _, _, err := readTree(ctx, filepath.Join(t.dir(w), fmt.Sprintf("copy%d", c))); err != nil {
					return err
				}
			}
			return nil
		}
		if err := r.readAndMeasure(ctx, w, caseTree, 0, i, files, info.Bytes, readCopies); err != nil {
			return err
		}
		for _, t := range r.order(i) {
			start := time.Now()
			for c := 1; c <= copies; c++ {
				if err := os.RemoveAll(filepath.Join(t.dir(w), fmt.Sprintf("copy%d", c))); err != nil {
					return err
				}
			}
			if err := t.settle(); err != nil {
				return err
			}
			r.rec.AddDuration(w, mTreeDelete, caseTree, 0, t.key, time.Since(start))
		}
	}
	return nil
}
