package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Workload ids, in the order a run measures them. --only takes these.
const (
	WorkloadClone    = "clone"     // clone latency vs size (contiguous files)
	WorkloadExtents  = "extents"   // clone and delete time vs extent count
	WorkloadMemory   = "memory"    // bytes held after reading N clones
	WorkloadRead     = "read"      // cached and uncached sequential read throughput
	WorkloadMapped   = "mapped"    // page cache of N processes mapping a library from N clones
	WorkloadOpen     = "firstopen" // first open of a never-opened clone (makes the backing) vs later opens
	WorkloadCoW      = "cow"       // random 4 KiB overwrites, shared vs unshared file
	WorkloadTree     = "tree"      // many small files cloned as a tree, copies read
	WorkloadMetadata = "metadata"  // create/stat/unlink of many empty files
	WorkloadLibrary  = "library"   // internal/enginebench tables (no FUSE, no XFS)
)

// Workloads lists every workload id in run order.
var Workloads = []string{WorkloadClone, WorkloadExtents, WorkloadMemory, WorkloadRead,
	WorkloadMapped, WorkloadOpen, WorkloadCoW, WorkloadTree, WorkloadMetadata, WorkloadLibrary}

// Config is one benchmark run: what to measure, how often, and where.
type Config struct {
	Quick       bool
	Runs        int       // samples per figure (the median is reported)
	Only        []string  // workload ids to run; empty means all
	OutDir      string    // JSON and PNG output
	ScratchDir  string    // parent of the temporary work directory (backing file, image)
	Exe         string    // the reflinkfs binary used to mount, clone -r, fiemap
	Perf        bool      // record the daemon with perf(1) during reads (if perf exists)
	CommandLine []string  // recorded in the report
	Stdout      io.Writer `json:"-"`
	Stderr      io.Writer `json:"-"` // progress lines

	ImageSize int64 // reflinkfs --size, and the XFS backing file's size
	CacheSize int64 // reflinkfs --cache-size

	CloneSizes     []int64 // contiguous files cloned
	FragSizes      []int64 // files written as random 4 KiB blocks (one extent per block)
	MemFileSize    int64   // the file cloned N times
	MemClones      []int   // N: clones besides the original, all read
	ReadFileSize   int64
	ReadBlockSizes []int
	MappedLibSize  int64   // the shared library each process maps
	MappedN        []int   // N: clones of the tree, one process each
	OpenSizes      []int64 // files whose never-opened clones are opened
	CoWFileSize    int64
	CoWWrites      int
	TreeFiles      int // regular files in the tree
	TreeCopies     int // clones of the tree, all read
	MetaFiles      int
}

// DefaultConfig returns the full (quick=false) or quick configuration. The
// caller sets Exe, the writers and, if wanted, Runs, Only and the directories.
func DefaultConfig(quick bool) Config {
	c := Config{
		Quick:          quick,
		Runs:           5,
		OutDir:         "bench-out",
		ScratchDir:     "/var/tmp",
		ImageSize:      64 << 30,
		CacheSize:      4 << 30,
		CloneSizes:     []int64{64 << 20, 1 << 30, 4 << 30},
		FragSizes:      []int64{64 << 20, 256 << 20, 1 << 30},
		MemFileSize:    1 << 30,
		MemClones:      []int{1, 2, 4, 8, 16},
		ReadFileSize:   1 << 30,
		ReadBlockSizes: []int{1 << 20, 128 << 10},
		MappedLibSize:  64 << 20,
		MappedN:        []int{1, 4, 16},
		OpenSizes:      []int64{64 << 20, 1 << 30},
		CoWFileSize:    1 << 30,
		CoWWrites:      20000,
		TreeFiles:      10000,
		TreeCopies:     8,
		MetaFiles:      100000,
	}
	if quick {
		c.Runs = 3
		c.CloneSizes = []int64{64 << 20, 256 << 20}
		c.FragSizes = []int64{16 << 20, 64 << 20, 256 << 20}
		c.MemFileSize = 256 << 20
		c.MemClones = []int{1, 2, 4, 8}
		c.ReadFileSize = 256 << 20
		c.MappedN = []int{1, 4}
		c.OpenSizes = []int64{64 << 20, 256 << 20}
		c.CoWFileSize = 256 << 20
		c.CoWWrites = 5000
		c.TreeFiles = 2000
		c.MetaFiles = 10000
	}
	return c
}

// ParseOnly turns a --only value ("clone,memory") into workload ids,
// rejecting unknown names. An empty value selects all workloads.
func ParseOnly(s string) ([]string, error) {
	var ids []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(Workloads, f) {
			return nil, fmt.Errorf("unknown workload %q (known: %s)", f, strings.Join(Workloads, ", "))
		}
		if !slices.Contains(ids, f) {
			ids = append(ids, f)
		}
	}
	return ids, nil
}

// selected reports whether workload id is part of this run.
func (c *Config) selected(id string) bool {
	return len(c.Only) == 0 || slices.Contains(c.Only, id)
}

// mode names the configuration in the report.
func (c *Config) mode() string {
	if c.Quick {
		return "quick"
	}
	return "full"
}

// needsMounts reports whether any selected workload uses the XFS and
// reflinkfs mounts (the library workload alone does not).
func (c *Config) needsMounts() bool {
	for _, id := range Workloads {
		if id != WorkloadLibrary && c.selected(id) {
			return true
		}
	}
	return false
}
