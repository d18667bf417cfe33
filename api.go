package reflinkfs

import (
	"errors"

	"github.com/cockroachdb/pebble/vfs"
	"github.com/reflinkfs/reflinkfs/internal/device"
	"io/fs"
	"log/slog"
	"time"
)

// BlockSize is the filesystem block size: the unit of allocation, sharing,
// caching and copy on write.
const BlockSize = 4096

// RootIno is the inode number of the root directory.
const RootIno uint64 = 1

// Options configure Create and Open. Zero values choose defaults.
type Options struct {
	// Size is the data device size in bytes (Create only). Default 64 GiB.
	Size int64
	// CacheSize bounds the block cache in bytes. Default 256 MiB.
	CacheSize int64
	// CommitInterval is how often dirty data and metadata are committed
	// in the background. Default 5s; negative disables periodic commits.
	CommitInterval time.Duration
	// Logger receives warnings (checksum errors, orphan cleanup). Default slog.Default().
	Logger *slog.Logger
	// ReadOnly opens the image without writing to it.
	ReadOnly bool
	// Recovery opens an image whose free-space or reference-count records
	// are damaged, for Fsck: damaged records are skipped (and reported by
	// Fsck) instead of refusing the open. Until Fsck(true) has rebuilt them,
	// nothing can be allocated (writes fail with ENOSPC).
	Recovery bool
	// Storage replaces the image directory's data file and metadata
	// filesystem; fault-injection tests use it to record and replay writes.
	Storage *Storage
	// Atime says when reads update access times. Default AtimeRelative.
	Atime AtimePolicy
}

// AtimePolicy says when a read (of file data, a directory listing or a
// symlink target) updates the inode's access time, as mount(8)'s relatime,
// strictatime and noatime.
type AtimePolicy int

const (
	// AtimeRelative updates atime when it is not newer than mtime or
	// ctime, or is at least a day old (Linux's relatime rule).
	AtimeRelative AtimePolicy = iota
	// AtimeStrict updates atime on every read.
	AtimeStrict
	// AtimeNever never updates atime on reads.
	AtimeNever
)

// Storage supplies the backing stores of an image (see Options.Storage).
// The image directory still holds the marker and lock files.
type Storage struct {
	Device device.Device // the data device (its size must match the image)
	MetaFS vfs.FS        // the filesystem pebble keeps the metadata store in
	// OnCommit, if set, is called after every durable commit, with the FS
	// quiescent (no operation in flight), so a test can snapshot MetaFS.
	OnCommit func()
}

// Stats reports space and cache figures.
type Stats struct {
	BlockSize   int64
	DeviceBytes int64 // size of the data device
	UsedBytes   int64 // physical bytes allocated on the data device
	FreeBytes   int64
	// LogicalBytes is the bytes mapped by all files' extent maps, counting a
	// shared block once per reference: what the data would need without sharing.
	LogicalBytes int64
	// SharedBytes is the physical bytes whose reference count is above one.
	SharedBytes int64
	Inodes      int64
	// ReapingFiles counts deleted files whose blocks are still being freed
	// in the background (see WaitReaped); their space is not in FreeBytes yet.
	ReapingFiles int64
	// SnapshotFiles and SnapshotBytes count the open snapshots (File.Snapshot:
	// nameless clones that back FUSE passthrough) and the bytes they map.
	// They share their blocks with files, so they add nothing to UsedBytes
	// while those files exist; they are not counted in Inodes or LogicalBytes.
	SnapshotFiles int64
	SnapshotBytes int64

	CacheLimitBytes int64 // configured cache size
	CachedBytes     int64 // bytes of file data resident in the cache
	DirtyBytes      int64 // cached bytes not yet written to the device
	// SharedCachedBytes is the cached bytes that more than one file has read.
	SharedCachedBytes int64
	// PerFileCachedBytes is what a per-file page cache (one copy per file
	// and block read) would hold for the same reads.
	PerFileCachedBytes int64
	CacheHits          int64
	CacheMisses        int64
	CacheEvictions     int64

	ChecksumErrors int64 // data blocks that failed CRC32C verification on read
	Commits        int64

	// CopySharedBlocks counts blocks that File.WriteAtSharing stored as a
	// reference to an equal block of a source instead of writing them (copy
	// detection); CopyHoleBlocks counts zero blocks it kept as holes because
	// the source has a hole there. Both since the image was opened.
	CopySharedBlocks int64
	CopyHoleBlocks   int64
}

// Extent is one mapping of a file's extent map, as reported by Fiemap.
type Extent struct {
	Logical  int64 // byte offset in the file
	Physical int64 // byte offset on the data device
	Length   int64 // bytes
	// Shared is set when the physical extent is referenced more than once.
	Shared bool
	// Unwritten is set on preallocated extents that read as zeros.
	Unwritten bool
}

// Attr is an inode's attributes. Mode holds Linux mode bits (S_IFMT type,
// permissions, setuid/setgid/sticky).
type Attr struct {
	Ino    uint64
	Gen    uint64
	Mode   uint32
	Nlink  uint32
	Uid    uint32
	Gid    uint32
	Rdev   uint32
	Size   int64
	Blocks int64 // 512-byte units of physical space mapped by the file
	Atime  time.Time
	Mtime  time.Time
	Ctime  time.Time
	Btime  time.Time
	Flags  uint32 // FlagImmutable, FlagAppend
}

// SetAttr lists attribute changes; nil fields are left alone.
type SetAttr struct {
	Mode  *uint32 // permission bits only (07777); the file type cannot change
	Uid   *uint32
	Gid   *uint32
	Size  *int64
	Atime *time.Time
	Mtime *time.Time
	Ctime *time.Time // set explicitly (otherwise ctime becomes now on any change)
	// TimesNow says Atime and Mtime are the current time (utimes with no
	// times): the one attribute change an append-only file allows.
	TimesNow bool
}

// Owner is the uid and gid given to a new inode.
type Owner struct{ Uid, Gid uint32 }

// DirEntry is one directory entry, as returned by ReadDirIno.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32 // S_IFMT bits of the child
}

// Rename flags, as renameat2(2).
const (
	RenameNoReplace = 1 << 0
	RenameExchange  = 1 << 1
)

// FileInfo is the fs.FileInfo returned by Stat; Sys() returns *Attr.
type fileInfo struct {
	name string
	attr Attr
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.attr.Size }
func (fi *fileInfo) Mode() fs.FileMode  { return unixToFileMode(fi.attr.Mode) }
func (fi *fileInfo) ModTime() time.Time { return fi.attr.Mtime }
func (fi *fileInfo) IsDir() bool        { return fi.Mode().IsDir() }
func (fi *fileInfo) Sys() any           { a := fi.attr; return &a }

// ErrRangesDiffer is returned by DedupeRange when the two ranges do not hold
// identical bytes; nothing is changed then.
var ErrRangesDiffer = errors.New("reflinkfs: dedupe ranges differ")

// ErrUnrepairable marks (in errors.Is) an error of Open with
// Options.Recovery for damage fsck can report but cannot repair, such as a
// metadata store that cannot be opened at all.
var ErrUnrepairable = errors.New("damage fsck cannot repair")

type unrepairable struct{ err error }

func (e unrepairable) Error() string   { return e.err.Error() }
func (e unrepairable) Unwrap() []error { return []error{e.err, ErrUnrepairable} }

// FsckReport is the result of a consistency check.
type FsckReport struct {
	// Problems are the invariant violations found (empty when clean); after
	// a repair, those left.
	Problems []string
	// Unrepairable are the Problems repair cannot fix (damaged file data);
	// the others it can.
	Unrepairable []string
	Repaired     []string // what repair changed (only with repair)
	Inodes       int64
	Extents      int64

	// recomputed totals, compared with the engine's in-memory counters
	sharedBlocks, mappedBlocks, freeBlocks int64
}

// Clean reports whether the check found no problems.
func (r *FsckReport) Clean() bool { return len(r.Problems) == 0 }
