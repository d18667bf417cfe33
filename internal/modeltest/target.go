package modeltest

import (
	"strconv"

	"github.com/reflinkfs/reflinkfs"
)

// B is the block size the oracle models sharing at.
const B = reflinkfs.BlockSize

// NumFiles is the number of file names the tester uses: f0 .. f5, all in one
// flat directory.
const NumFiles = 6

// NumSlots is the number of removed-but-open files a sequence may hold.
const NumSlots = 2

// FileName is the name of file index i.
func FileName(i int) string { return "f" + strconv.Itoa(i) }

// Target is the system under test. Files live in one flat directory, named
// FileName(0) .. FileName(NumFiles-1). Errors are compared by errno
// (errors.As syscall.Errno) or errors.Is(reflinkfs.ErrRangesDiffer).
type Target interface {
	WriteAt(name string, off int64, data []byte) error    // creates the file if missing
	ReadAt(name string, off int64, n int) ([]byte, error) // exactly the bytes read (short at EOF)
	Size(name string) (int64, error)
	Truncate(name string, size int64) error
	PunchHole(name string, off, n int64) error
	ZeroRange(name string, off, n int64) error // extends size like FALLOC_FL_ZERO_RANGE without KEEP_SIZE
	Allocate(name string, off, n int64, keepSize bool) error
	CloneRange(src, dst string, srcOff, n, dstOff int64) error
	DedupeRange(src, dst string, srcOff, n, dstOff int64) (int64, error)
	CopyRange(src, dst string, srcOff, n, dstOff int64) (int64, error)
	Unshare(name string, off, n int64) error
	Sync(name string) error
	Reopen() error                // close and reopen the whole filesystem
	Remove(name string) error     // the file's blocks are released once no handle holds it
	Rename(old, new string) error // replaces new if it exists
	Fiemap(name string) ([]reflinkfs.Extent, error)
	UsedBytes() (int64, error)
	Check() error // fsck; error when not clean
}

// Detacher is implemented by targets that can remove a file while keeping an
// open handle to it (an unlinked-but-open file), read through that handle,
// and close it later. Sequences use slots 0 .. NumSlots-1. Reopen closes all
// detached handles. Targets without it simply never see these operations.
type Detacher interface {
	// Detach opens name (ENOENT if missing), closes whatever slot held,
	// removes name and keeps the open handle in slot.
	Detach(name string, slot int) error
	ReadDetached(slot int, off int64, n int) ([]byte, error)
	SizeDetached(slot int) (int64, error)
	// CloseDetached closes the handle in slot (no-op when empty); the file's
	// blocks are released then.
	CloseDetached(slot int) error
}

// SpaceStats are the engine's space figures beyond UsedBytes.
type SpaceStats struct {
	LogicalBytes   int64 // bytes mapped by all files' extent maps, shared blocks once per reference
	SharedBytes    int64 // physical bytes whose reference count is above one
	ChecksumErrors int64 // must stay zero
}

// SpaceReporter is implemented by targets that report SpaceStats; the runner
// then checks them against the oracle too.
type SpaceReporter interface {
	SpaceStats() (SpaceStats, error)
}

// Factory makes a fresh, empty target. If the target implements io.Closer the
// runner closes it when a run ends.
type Factory func() (Target, error)
