package control

import "github.com/reflinkfs/reflinkfs"

// Report is the JSON form of reflinkfs.Stats served at GET /stats and printed
// by `reflinkfs stats --json`: every Stats field under its snake_case name,
// plus two derived figures.
type Report struct {
	BlockSize          int64 `json:"block_size"`
	DeviceBytes        int64 `json:"device_bytes"`
	UsedBytes          int64 `json:"used_bytes"`
	FreeBytes          int64 `json:"free_bytes"`
	LogicalBytes       int64 `json:"logical_bytes"`
	SharedBytes        int64 `json:"shared_bytes"`
	Inodes             int64 `json:"inodes"`
	ReapingFiles       int64 `json:"reaping_files"`
	CacheLimitBytes    int64 `json:"cache_limit_bytes"`
	CachedBytes        int64 `json:"cached_bytes"`
	DirtyBytes         int64 `json:"dirty_bytes"`
	SharedCachedBytes  int64 `json:"shared_cached_bytes"`
	PerFileCachedBytes int64 `json:"per_file_cached_bytes"`
	CacheHits          int64 `json:"cache_hits"`
	CacheMisses        int64 `json:"cache_misses"`
	CacheEvictions     int64 `json:"cache_evictions"`
	ChecksumErrors     int64 `json:"checksum_errors"`
	Commits            int64 `json:"commits"`

	SnapshotFiles int64 `json:"snapshot_files"`
	SnapshotBytes int64 `json:"snapshot_bytes"`

	// Copy detection (copyshare): blocks written equal to a block the
	// writer had just read, stored as references to it, and zero blocks
	// kept as holes where the source has one.
	CopySharedBlocks int64 `json:"copy_shared_blocks"`
	CopyHoleBlocks   int64 `json:"copy_hole_blocks"`

	// Passthrough is page cache sharing through FUSE passthrough, when the
	// daemon serves a mount (absent for a bare engine).
	Passthrough *PassthroughReport `json:"passthrough,omitempty"`

	// HitRate is CacheHits / (CacheHits + CacheMisses), 0 before any lookup.
	HitRate float64 `json:"hit_rate"`
	// MemorySavedBytes is what a per-file page cache would hold beyond what
	// the shared cache holds: PerFileCachedBytes - CachedBytes, never negative.
	MemorySavedBytes int64 `json:"memory_saved_bytes"`
}

// NewReport converts engine statistics into a Report.
func NewReport(s reflinkfs.Stats) Report {
	return Report{
		BlockSize:          s.BlockSize,
		DeviceBytes:        s.DeviceBytes,
		UsedBytes:          s.UsedBytes,
		FreeBytes:          s.FreeBytes,
		LogicalBytes:       s.LogicalBytes,
		SharedBytes:        s.SharedBytes,
		Inodes:             s.Inodes,
		ReapingFiles:       s.ReapingFiles,
		CacheLimitBytes:    s.CacheLimitBytes,
		CachedBytes:        s.CachedBytes,
		DirtyBytes:         s.DirtyBytes,
		SharedCachedBytes:  s.SharedCachedBytes,
		PerFileCachedBytes: s.PerFileCachedBytes,
		CacheHits:          s.CacheHits,
		CacheMisses:        s.CacheMisses,
		CacheEvictions:     s.CacheEvictions,
		ChecksumErrors:     s.ChecksumErrors,
		Commits:            s.Commits,
		SnapshotFiles:      s.SnapshotFiles,
		SnapshotBytes:      s.SnapshotBytes,
		CopySharedBlocks:   s.CopySharedBlocks,
		CopyHoleBlocks:     s.CopyHoleBlocks,
		HitRate:            hitRate(s),
		MemorySavedBytes:   max(0, s.PerFileCachedBytes-s.CachedBytes),
	}
}

// Stats converts a Report back into engine statistics (derived fields dropped).
func (r Report) Stats() reflinkfs.Stats {
	return reflinkfs.Stats{
		BlockSize:          r.BlockSize,
		DeviceBytes:        r.DeviceBytes,
		UsedBytes:          r.UsedBytes,
		FreeBytes:          r.FreeBytes,
		LogicalBytes:       r.LogicalBytes,
		SharedBytes:        r.SharedBytes,
		Inodes:             r.Inodes,
		ReapingFiles:       r.ReapingFiles,
		CacheLimitBytes:    r.CacheLimitBytes,
		CachedBytes:        r.CachedBytes,
		DirtyBytes:         r.DirtyBytes,
		SharedCachedBytes:  r.SharedCachedBytes,
		PerFileCachedBytes: r.PerFileCachedBytes,
		CacheHits:          r.CacheHits,
		CacheMisses:        r.CacheMisses,
		CacheEvictions:     r.CacheEvictions,
		ChecksumErrors:     r.ChecksumErrors,
		Commits:            r.Commits,
		SnapshotFiles:      r.SnapshotFiles,
		SnapshotBytes:      r.SnapshotBytes,
		CopySharedBlocks:   r.CopySharedBlocks,
		CopyHoleBlocks:     r.CopyHoleBlocks,
	}
}

// PassthroughReport describes how clones share the kernel's page cache
// through FUSE passthrough (see package fusefs and internal/backing).
type PassthroughReport struct {
	Mode string `json:"mode"` // the share= policy
	// Unavailable says why passthrough is off; empty when it works.
	Unavailable string `json:"unavailable,omitempty"`
	// Backing files: one per distinct content that passthrough opens read.
	BackingFiles       int   `json:"backing_files"`
	BackingFilesInUse  int   `json:"backing_files_in_use"`
	BackingBytes       int64 `json:"backing_bytes"`        // their total size
	BackingCachedBytes int64 `json:"backing_cached_bytes"` // in the kernel page cache
	BackingsCreated    int64 `json:"backings_created"`
	BackingsEvicted    int64 `json:"backings_evicted"`
	Opens              int64 `json:"opens"`    // opens passed through
	OpenNow            int   `json:"open_now"` // passthrough handles open now
	// Refused counts writable opens and truncates refused with ETXTBSY
	// because passthrough readers were open.
	Refused int64 `json:"refused"`
	// Fallbacks counts eligible opens served without passthrough, by reason.
	Fallbacks map[string]int64 `json:"fallbacks,omitempty"`
}

// PassthroughSource is a StatsSource that also reports passthrough; nil
// when no mount is served (yet).
type PassthroughSource interface {
	Passthrough() *PassthroughReport
}

// newFullReport is NewReport of src's statistics with passthrough added.
func newFullReport(src StatsSource) Report {
	r := NewReport(src.Stats())
	if p, ok := src.(PassthroughSource); ok {
		r.Passthrough = p.Passthrough()
	}
	return r
}

func hitRate(s reflinkfs.Stats) float64 {
	lookups := s.CacheHits + s.CacheMisses
	if lookups == 0 {
		return 0
	}
	return float64(s.CacheHits) / float64(lookups)
}
