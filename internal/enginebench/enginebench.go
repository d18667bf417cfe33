// Package enginebench measures the engine through its library API and
// prints tables: clone time against file size and extent count, and the
// cache memory held by N fully read clones of one file.
//
// Figures on a shared machine are noisy: every figure is the median of
// several runs, and comparisons are made within one run.
package enginebench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/reflinkfs/reflinkfs"
)

// Config selects the sizes measured.
type Config struct {
	Dir         string  // scratch directory for images (removed afterwards)
	Sizes       []int64 // contiguous file sizes for clone timing
	FragSize    int64   // size of the fragmented file
	FragExtents int     // random 4 KiB writes into it (extent count ~ this)
	Clones      []int   // N for the memory table
	CloneSize   int64   // file size for the memory table
	Runs        int     // repetitions per figure (median reported)
	CacheSize   int64
	Out         io.Writer
}

// Quick is a configuration that runs in well under a minute.
func Quick(dir string, out io.Writer) Config {
	return Config{Dir: dir, Sizes: []int64{64 << 20, 256 << 20}, FragSize: 64 << 20, FragExtents: 10000,
		Clones: []int{1, 2, 4, 8}, CloneSize: 64 << 20, Runs: 5, CacheSize: 1 << 30, Out: out}
}

// Full is the configuration of docs/benchmarks.md.
func Full(dir string, out io.Writer) Config {
	return Config{Dir: dir, Sizes: []int64{64 << 20, 1 << 30, 4 << 30}, FragSize: 1 << 30, FragExtents: 131072,
		Clones: []int{1, 2, 4, 8, 16}, CloneSize: 1 << 30, Runs: 5, CacheSize: 2 << 30, Out: out}
}

func median(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// Run measures and prints all tables.
func Run(cfg Config) error {
	fsys, err := createFor(cfg)
	if err != nil {
		return err
	}
	defer func() {
		fsys.Close()
		os.RemoveAll(filepath.Join(cfg.Dir, "enginebench.img"))
	}()
	if err := cloneBySize(fsys, cfg); err != nil {
		return err
	}
	if err := cloneByExtents(fsys, cfg); err != nil {
		return err
	}
	return memoryOfClones(fsys, cfg)
}

func createFor(cfg Config) (*reflinkfs.FS, error) {
	img := filepath.Join(cfg.Dir, "enginebench.img")
	os.RemoveAll(img)
	maxSize := cfg.CloneSize
	for _, s := range cfg.Sizes {
		maxSize = max(maxSize, s)
	}
	return reflinkfs.Create(img, reflinkfs.Options{Size: 4*maxSize + 2*cfg.FragSize + (1 << 30), CacheSize: cfg.CacheSize, CommitInterval: -1})
}

func writeSequential(fsys *reflinkfs.FS, name string, size int64) error {
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 3)
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		buf[0] = byte(off >> 20) // distinct blocks
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// timeClone clones src to a fresh name cfg.Runs times and returns the
// median clone and delete times.
func timeClone(fsys *reflinkfs.FS, src string, runs int) (clone, del time.Duration, err error) {
	var cs, ds []time.Duration
	for i := 0; i < runs; i++ {
		dst := fmt.Sprintf("%s.clone%d", src, i)
		t0 := time.Now()
		if err := fsys.Clone(src, dst); err != nil {
			return 0, 0, err
		}
		cs = append(cs, time.Since(t0))
		if err := fsys.Sync(); err != nil {
			return 0, 0, err
		}
		t0 = time.Now()
		if err := fsys.Remove(dst); err != nil {
			return 0, 0, err
		}
		ds = append(ds, time.Since(t0))
		if err := fsys.Sync(); err != nil {
			return 0, 0, err
		}
	}
	return median(cs), median(ds), nil
}

func extentCount(fsys *reflinkfs.FS, name string) (int, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	ext, err := f.Fiemap()
	return len(ext), err
}

func cloneBySize(fsys *reflinkfs.FS, cfg Config) error {
	tw := tabwriter.NewWriter(cfg.Out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(cfg.Out, "\nClone of a contiguous file through the library (median of %d)\n\n", cfg.Runs)
	fmt.Fprintln(tw, "size\textents\tclone\tdelete clone\t")
	for _, size := range cfg.Sizes {
		name := fmt.Sprintf("contig-%d", size)
		if err := writeSequential(fsys, name, size); err != nil {
			return err
		}
		if err := fsys.Sync(); err != nil {
			return err
		}
		n, err := extentCount(fsys, name)
		if err != nil {
			return err
		}
		c, d, err := timeClone(fsys, name, cfg.Runs)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t\n", human(size), n, c.Round(time.Microsecond), d.Round(time.Microsecond))
		if err := fsys.Remove(name); err != nil {
			return err
		}
	}
	return tw.Flush()
}

func cloneByExtents(fsys *reflinkfs.FS, cfg Config) error {
	name := "fragmented"
	if err := writeSequential(fsys, name, cfg.FragSize); err != nil {
		return err
	}
	if err := fsys.Sync(); err != nil {
		return err
	}
	// Random 4 KiB overwrites after a commit each move one block: every
	// one splits an extent.
	f, err := fsys.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 1))
	blk := make([]byte, reflinkfs.BlockSize)
	blocks := cfg.FragSize / reflinkfs.BlockSize
	for i := 0; i < cfg.FragExtents; i++ {
		blk[0] = byte(i)
		if _, err := f.WriteAt(blk, rng.Int64N(blocks)*reflinkfs.BlockSize); err != nil {
			return err
		}
	}
	f.Close()
	if err := fsys.Sync(); err != nil {
		return err
	}
	n, err := extentCount(fsys, name)
	if err != nil {
		return err
	}
	c, d, err := timeClone(fsys, name, cfg.Runs)
	if err != nil {
		return err
	}
	fmt.Fprintf(cfg.Out, "\nClone of a fragmented file (median of %d)\n\n", cfg.Runs)
	tw := tabwriter.NewWriter(cfg.Out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "size\textents\tclone\tdelete clone\tper extent\t")
	fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\t\n", human(cfg.FragSize), n, c.Round(time.Microsecond), d.Round(time.Microsecond), (c / time.Duration(max(n, 1))).Round(time.Nanosecond))
	if err := tw.Flush(); err != nil {
		return err
	}
	return fsys.Remove(name)
}

func memoryOfClones(fsys *reflinkfs.FS, cfg Config) error {
	fmt.Fprintf(cfg.Out, "\nCache memory after reading N clones of a %s file in full\n\n", human(cfg.CloneSize))
	tw := tabwriter.NewWriter(cfg.Out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "N\tcached\tcached / file\tper-file cache would hold\tread time\t")
	buf := make([]byte, 1<<20)
	for _, n := range cfg.Clones {
		// A fresh image state per N: the source, its clones, an empty cache.
		if err := writeSequential(fsys, "mem-src", cfg.CloneSize); err != nil {
			return err
		}
		names := []string{"mem-src"}
		for i := 1; i < n; i++ {
			name := fmt.Sprintf("mem-clone%d", i)
			if err := fsys.Clone("mem-src", name); err != nil {
				return err
			}
			names = append(names, name)
		}
		if err := fsys.Sync(); err != nil {
			return err
		}
		if err := fsys.DropCache(); err != nil {
			return err
		}
		t0 := time.Now()
		for _, name := range names {
			f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
			if err != nil {
				return err
			}
			for off := int64(0); ; off += int64(len(buf)) {
				_, err := f.ReadAt(buf, off)
				if err == io.EOF {
					break
				}
				if err != nil {
					f.Close()
					return err
				}
			}
			f.Close()
		}
		elapsed := time.Since(t0)
		st := fsys.Stats()
		fmt.Fprintf(tw, "%d\t%s\t%.3f×\t%s\t%v\t\n", n, human(st.CachedBytes), float64(st.CachedBytes)/float64(cfg.CloneSize),
			human(st.PerFileCachedBytes), elapsed.Round(time.Millisecond))
		for _, name := range names {
			if err := fsys.Remove(name); err != nil {
				return err
			}
		}
		if err := fsys.Sync(); err != nil {
			return err
		}
	}
	return tw.Flush()
}

func human(b int64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", b>>30)
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	default:
		return fmt.Sprintf("%d KiB", b>>10)
	}
}
